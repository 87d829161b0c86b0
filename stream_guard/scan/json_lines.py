"""``scan --jsonl FILE|-``: the scan's results as JSON Lines, one line per file as each is done.

A moderation queue or a script (``stream-guard scan uploads/ --jsonl - | jq ...``) gets each file's
verdict as soon as it is known, and an interrupted or crashed scan leaves every file it finished.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from stream_guard.errors import OutputError
from stream_guard.file_analysis import Scanned
from stream_guard.model.provenance import Provenance
from stream_guard.outputs.pipes import retire_broken_pipe
from stream_guard.scan.report import display_names, file_json, run_json
from stream_guard.scan.runner import FileOutcome, ScanResult
from stream_guard.writable import is_stdout

log = logging.getLogger(__name__)


class ScanLines:
    """Writes a ``start`` line, a ``file`` line per file (the report's record of it, without the
    report's pictures) and a ``summary`` line (the report's header), each flushed as it is written.

    ``target``: a file (made anew) or ``-`` for standard output. If standard output's reader goes
    away (``| head``), ``on_reader_gone`` is called (the scan stops: nothing else reads it). A file
    that stops taking lines (a full disk) is an error at :meth:`close`; the scan goes on."""

    def __init__(self, target: str | Path, files: Sequence[Scanned],
                 on_reader_gone: Callable[[], None] = lambda: None) -> None:
        self.target = str(target)
        self._names = display_names(list(files))
        self._count = 0
        self._on_reader_gone = on_reader_gone
        self._error: OSError | None = None
        self._owns = not is_stdout(self.target)
        self._fh: IO[str] | None
        if self._owns:
            try:
                self._fh = Path(target).open("w", encoding="utf-8")
            except OSError as e:
                raise OutputError(f"--jsonl {target}: cannot write ({e.strerror or e})") from e
        else:
            self._fh = sys.stdout

    def start(self, provenance: Provenance) -> None:
        self._write({"type": "start", **provenance.to_json(), "files": len(self._names)})

    def file(self, outcome: FileOutcome) -> None:
        """The next file's outcome (files come in the order they were given)."""
        index, self._count = self._count, self._count + 1
        self._write({"type": "file", **file_json(index, outcome, self._names[index], assets=False)})

    def summary(self, result: ScanResult) -> None:
        self._write({"type": "summary", **run_json(result)})

    def _write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        try:
            self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._fh.flush()
        except OSError as e:
            if isinstance(e, BrokenPipeError) and not self._owns:
                log.info("--jsonl -: the reader of standard output went away: the scan stops")
                retire_broken_pipe(self._fh)
                self._fh = None
                self._on_reader_gone()
                return
            # a full disk, or a named pipe (a file given as --jsonl) whose reader went away
            log.error("--jsonl %s: cannot write (%s): the lines from here on are lost", self.target,
                      e.strerror or e)
            self._error = e
            self._close_file()

    def _close_file(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None and self._owns:
            try:
                fh.close()
            except OSError as e:
                self._error = self._error or e

    def close(self) -> None:
        """Close the file; :class:`OutputError` if a line could not be written."""
        self._close_file()
        if self._error is not None:
            raise OutputError(f"--jsonl {self.target}: output failed during the scan: what it wrote is incomplete "
                              f"({self._error.strerror or self._error})")
