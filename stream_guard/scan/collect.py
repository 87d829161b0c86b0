"""Expand the paths given to ``scan`` into the video and image files to analyse."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from stream_guard.errors import SourceNotFoundError
from stream_guard.file_analysis import IMAGE_SUFFIXES, VIDEO_SUFFIXES

SCANNED_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


def is_scannable(path: Path) -> bool:
    """Whether a file's suffix is one of the video or image suffixes ``scan`` reads."""
    return path.suffix.lower() in SCANNED_SUFFIXES and not path.name.startswith(".")


def collect_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly (whatever their suffix) and, inside folders, recursively, every
    video or image file, sorted per folder; duplicates removed, order kept. A path that does
    not exist raises :class:`SourceNotFoundError`."""
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.is_file() and is_scannable(p))
        elif path.is_file():
            candidates = [path]
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
