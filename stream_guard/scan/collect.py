"""Expand the paths given to ``scan`` into the video and image files (and recordings' URLs) to analyse."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from stream_guard.errors import SourceNotFoundError
from stream_guard.file_analysis import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Scanned
from stream_guard.sources.spec import file_url_path, missing_file, parse_source, url_scheme

SCANNED_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


def is_scannable(path: Path) -> bool:
    """Whether a file's suffix is one of the video or image suffixes ``scan`` reads."""
    return path.suffix.lower() in SCANNED_SUFFIXES and not path.name.startswith(".")


def _is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def collect_files(paths: Iterable[str | Path], skip_folders: Iterable[Path] = ()) -> list[Scanned]:
    """Files named directly (whatever their suffix) and, inside folders, recursively, every
    video or image file, sorted per folder; URLs as they are (a recording over the network);
    duplicates removed, order kept. A path that does not exist raises :class:`SourceNotFoundError`,
    an unknown URL scheme :class:`ConfigError`. ``skip_folders``: folders a folder's walk leaves out
    (the scan's own report, whose thumbnails are faces)."""
    found: list[Scanned] = []
    seen: set[Path | str] = set()
    skipped = {folder.resolve() for folder in skip_folders}
    for raw in paths:
        scheme = url_scheme(str(raw))
        if scheme not in (None, "file"):
            url = parse_source(str(raw)).url  # an unknown scheme is refused here, before any file
            if url not in seen:
                seen.add(url)
                found.append(url)
            continue
        path = Path(file_url_path(str(raw)) if scheme == "file" else raw).expanduser()
        if path.is_dir():
            # a broken link is kept: reported as an error, not silently left unchecked (an unmounted drive)
            candidates = sorted(p for p in path.rglob("*") if (p.is_file() or _is_broken_link(p)) and is_scannable(p)
                                and not skipped.intersection(p.resolve().parents))
        elif path.is_file() or _is_broken_link(path):
            candidates = [path]
        elif path.exists():  # a named pipe, a device
            raise missing_file(str(raw), path)
        else:
            raise SourceNotFoundError(f"no such file or folder: {raw}")
        for p in candidates:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                found.append(p)
    if not found:
        raise SourceNotFoundError(f"no video or image files found in {', '.join(str(p) for p in paths)}")
    return found
