"""Expand the paths given to ``scan`` into the video and image files (and recordings' URLs) to analyse."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from stream_guard.errors import SourceNotFoundError
from stream_guard.file_analysis import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Scanned
from stream_guard.scan.report import EXPLAIN, PLOTS, REPORT_HTML, REPORT_JSON, THUMBS
from stream_guard.sources.spec import file_url_path, missing_file, parse_source, url_scheme

log = logging.getLogger(__name__)

SCANNED_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
REPORT_PICTURES = frozenset({PLOTS, THUMBS, EXPLAIN})  # a report's own folders of pictures (faces among them)


def _is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _is_report(folder: Path, reports: set[Path]) -> bool:
    """Whether ``folder`` is a scan report's (this scan's ``--report``, or one with a report's two files)."""
    return folder.resolve() in reports or ((folder / REPORT_JSON).is_file() and (folder / REPORT_HTML).is_file())


def _folder_files(folder: Path, reports: set[Path]) -> list[Path]:
    """Every video or image file under ``folder``, sorted, following links to folders (each folder once: a
    link loop ends), leaving out hidden files (said) and the pictures of scan reports (their plots and face
    thumbnails). A broken link is kept: reported as an error, not silently left unchecked (an unmounted drive)."""
    found: list[Path] = []
    hidden: list[Path] = []
    walked: set[Path] = set()
    for root, folders, names in os.walk(folder, followlinks=True):
        here = Path(root)
        real = here.resolve()
        if real in walked:
            folders.clear()
            continue
        walked.add(real)
        if _is_report(here, reports):
            folders[:] = [name for name in folders if name not in REPORT_PICTURES]
        for name in names:
            path = here / name
            if path.suffix.lower() not in SCANNED_SUFFIXES or not (path.is_file() or _is_broken_link(path)):
                continue
            (hidden if name.startswith(".") else found).append(path)
    if hidden:
        log.warning("%s: left out %d hidden file(s) (a name that starts with '.', such as macOS's ._ copies), "
                    "e.g. %s: name one to scan it", folder, len(hidden), hidden[0].name)
    return sorted(found)


def collect_files(paths: Iterable[str | Path], reports: Iterable[Path] = ()) -> list[Scanned]:
    """Files named directly (whatever their suffix) and, inside folders, recursively, every
    video or image file, sorted per folder (:func:`_folder_files`); URLs as they are (a recording over
    the network); duplicates removed, order kept. A path that does not exist raises
    :class:`SourceNotFoundError`, an unknown URL scheme :class:`ConfigError`. ``reports``: report folders
    whose pictures a folder's walk leaves out (the scan's own ``--report``), besides any it recognises."""
    found: list[Scanned] = []
    seen: set[Path | str] = set()
    report_folders = {folder.resolve() for folder in reports}
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
            candidates = _folder_files(path, report_folders)
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
