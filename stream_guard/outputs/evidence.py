"""What the alert-evidence outputs (``--snapshots``, ``--clips``) share, and ``--out-segment`` with
them: file names that sort in time order, a JSON Lines log in the folder, and keeping only the
newest N items."""
from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable

from stream_guard.errors import OutputError
from stream_guard.model.provenance import Provenance
from stream_guard.writable import make_folder

log = logging.getLogger(__name__)
STAMP_PATTERN = r"\d{8}T\d{6}\.\d{3}Z"
STEM_PATTERN = rf"{STAMP_PATTERN}_face\d+"


def utc_stamp(wall_time: float) -> str:
    """``20261204T232741.123Z``: a UTC time to the millisecond, so names sort in time order."""
    stamp = datetime.fromtimestamp(wall_time, timezone.utc)
    return f"{stamp:%Y%m%dT%H%M%S}.{stamp.microsecond // 1000:03d}Z"


def evidence_stem(wall_time: float, track_id: int) -> str:
    """``20261204T232741.123Z_face3``: the time (:func:`utc_stamp`) and the face's id."""
    return f"{utc_stamp(wall_time)}_face{track_id}"


def unused_name(folder: Path, wall_time: float, name: Callable[[float], str]) -> tuple[str, float]:
    """``name(t)`` for the first millisecond ``t`` from ``wall_time`` on whose file is not in ``folder``
    (two items started within one millisecond), and that ``t``."""
    while (folder / name(wall_time)).exists():
        wall_time += 0.001
    return name(wall_time), wall_time


def open_evidence_log(folder: Path, log_name: str, option: str) -> IO[str]:
    """Create ``folder`` if needed and open its log for appending; a folder that cannot be
    written is an :class:`OutputError` naming ``option``."""
    make_folder(folder, option)
    try:
        return (folder / log_name).open("a", encoding="utf-8")
    except OSError as e:
        raise OutputError(f"{option} {folder}: cannot write there ({e.strerror or e})") from e


def append_record(log: IO[str], record: dict[str, Any], provenance: Provenance | None = None) -> None:
    """One JSON object per line, flushed so a reader of the log sees it at once; with ``provenance``,
    the line also names the software, model and threshold that judged the alert."""
    if provenance is not None:
        record = {**record, **provenance.to_json()}
    log.write(json.dumps(record) + "\n")
    log.flush()


class EvidenceLog:
    """An evidence folder's JSON Lines log (:func:`append_record`), opened for appending. A line the disk
    refuses (it filled up) is counted in ``lost`` and the log is opened again for the next line, so the log
    comes back once there is room; a line cut short stays (``verify`` counts it as unreadable)."""

    def __init__(self, folder: Path, name: str, option: str) -> None:
        self.folder, self.name, self.option = folder, name, option
        self.lost = 0
        self._file: IO[str] | None = None

    def open(self) -> None:
        """Create the folder if needed and open the log; a folder that cannot be written is an
        :class:`OutputError` (at start-up: the run stops)."""
        self._file = open_evidence_log(self.folder, self.name, self.option)

    def append(self, record: dict[str, Any], provenance: Provenance | None = None) -> None:
        """Append one line; one the disk refused is logged and counted."""
        try:
            if self._file is None:
                self._file = open_evidence_log(self.folder, self.name, self.option)
            append_record(self._file, record, provenance)
        except (OSError, OutputError) as e:
            self.lost += 1
            log.error("%s %s: cannot write to %s (%s)", self.option, self.folder, self.name, e)
            broken, self._file = self._file, None
            if broken is not None:
                with contextlib.suppress(OSError):
                    broken.close()

    def close(self) -> None:
        log_file, self._file = self._file, None
        if log_file is not None:
            log_file.close()


class NewestKept:
    """Keeps the files of the newest ``keep`` items in ``folder``. An item is a stem; ``files``
    names its files and ``pattern`` (a regex whose group 1 is the stem) recognises them, so
    items of earlier runs count too and files this output did not name are never touched. In an
    evidence folder each removal is logged in ``log`` (a ``removed`` line naming ``option``), so
    ``verify`` can tell the files this option removed from ones deleted by hand."""

    def __init__(self, folder: Path, pattern: str, files: Callable[[str], tuple[Path, ...]], keep: int,
                 log: EvidenceLog | None = None, option: str = "") -> None:
        self.folder = folder
        self.files = files
        self.keep = keep
        self._pattern = re.compile(pattern)
        self._stems: deque[str] = deque()  # oldest first
        self._log, self._option = log, option

    def scan(self) -> None:
        """Count the items already in the folder."""
        found = {m.group(1) for p in self.folder.iterdir() if (m := self._pattern.match(p.name))}
        self._stems.extend(sorted(found))

    def add(self, stem: str) -> None:
        """Record a new item and delete the oldest beyond ``keep``."""
        self._stems.append(stem)
        removed = []
        while len(self._stems) > self.keep:
            for path in self.files(self._stems.popleft()):
                path.unlink(missing_ok=True)
                removed.append(path.name)
        if removed and self._log is not None:
            self._log.append({"type": "removed", "files": removed, "option": self._option, "keep": self.keep})
