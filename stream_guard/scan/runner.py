"""Analyse each file of a scan with :func:`stream_guard.file_analysis.analyse_file`.

A file that cannot be read (missing, not a video, fails to decode, too small) is recorded
with verdict ``error`` and the scan goes on; a problem with the model or the options
(:class:`ModelError`, :class:`ConfigError`) would fail every file alike, so it ends the scan.
"""
from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stream_guard.config import RunConfig
from stream_guard.errors import ConfigError, ModelError, SourceError, StreamGuardError
from stream_guard.file_analysis import FileAnalysis, Scanned, analyse_file
from stream_guard.model.contract import ModelSpec
from stream_guard.model.occlusion import Explaining
from stream_guard.model.provenance import Provenance
from stream_guard.outputs.base import Sink

log = logging.getLogger(__name__)

EXIT_FAKE_FOUND = 10  # `scan` exit code when at least one file's verdict is fake (0: none)
VERDICTS = ("fake", "real", "no-face", "error")


@dataclass(frozen=True)
class FileOutcome:
    """One scanned file (or URL): its analysis, or the one-line reason it could not be analysed."""

    path: Scanned
    analysis: FileAnalysis | None
    error: str | None = None
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        return "error" if self.analysis is None else self.analysis.verdict

    @property
    def score(self) -> float | None:
        return None if self.analysis is None else self.analysis.score


@dataclass
class ScanResult:
    """Every file's outcome plus what the report needs to say about the run."""

    provenance: Provenance  # the software, model and threshold that judged the files
    outcomes: list[FileOutcome] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    elapsed_s: float = 0.0
    interrupted: bool = False

    def count(self, verdict: str) -> int:
        return sum(1 for o in self.outcomes if o.verdict == verdict)

    @property
    def fake_found(self) -> bool:
        return self.count("fake") > 0

    @property
    def unread(self) -> list[FileOutcome]:
        """The files that could not be analysed (verdict ``error``)."""
        return [o for o in self.outcomes if o.analysis is None]

    @property
    def exit_code(self) -> int:
        """``EXIT_FAKE_FOUND`` if any file is judged fake; else a source error's code if a file could not be
        read, since "no fake found" would then claim more than was checked; else 0."""
        if self.fake_found:
            return EXIT_FAKE_FOUND
        return SourceError.exit_code if self.unread else 0


def analyse_one(path: Scanned, config: RunConfig, scratch: Path, max_frames: int | None = None,
                explaining: Explaining | None = None, sinks: Sequence[Sink] = ()) -> FileOutcome:
    """Analyse one file; an error about the file itself becomes an ``error`` outcome."""
    start = time.monotonic()
    try:
        analysis = analyse_file(path, config, max_frames=max_frames, scratch=scratch, explaining=explaining,
                                sinks=sinks)
    except (ModelError, ConfigError):
        raise
    except StreamGuardError as e:
        log.info("%s", e)
        return FileOutcome(path, None, str(e), time.monotonic() - start)
    return FileOutcome(path, analysis, None, time.monotonic() - start)


def scan_files(files: Sequence[Scanned], config: RunConfig, spec: ModelSpec,
               on_file: Callable[[FileOutcome], None] | None = None,
               should_stop: Callable[[], bool] = lambda: False,
               max_frames: int | None = None, explaining: Explaining | None = None,
               file_sinks: Callable[[Scanned], Sequence[Sink]] = lambda _path: ()) -> ScanResult:
    """Analyse ``files`` in order; ``on_file`` is called after each one. ``should_stop`` is
    checked between files (an interrupted scan keeps what it has and says so). ``explaining``:
    add occlusion maps to the faces it asks for. ``file_sinks``: outputs that also receive a file's
    frames (a progress bar)."""
    result = ScanResult(Provenance.of(spec, config.model.threshold))
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stream_guard_scan_") as scratch:
        for path in files:
            if should_stop():
                result.interrupted = True
                break
            try:
                outcome = analyse_one(path, config, Path(scratch), max_frames, explaining, file_sinks(path))
            except KeyboardInterrupt:
                result.interrupted = True
                break
            if should_stop():  # stopped while this file ran: its analysis is partial, leave it out
                result.interrupted = True
                break
            result.outcomes.append(outcome)
            if outcome.analysis is not None:
                result.provenance = outcome.analysis.provenance
            if on_file is not None:
                on_file(outcome)
    result.interrupted = result.interrupted or should_stop()
    result.elapsed_s = time.monotonic() - start
    return result
