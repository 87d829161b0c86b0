"""JSON Lines events: one record per scored face update, per verdict change, per alert
raised or cleared, per source state change, and a summary at the end."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import IO, Any, Callable

from stream_guard.errors import OutputError
from stream_guard.model.provenance import Provenance
from stream_guard.outputs.alerts import AlertOptions, AlertStateMachine
from stream_guard.outputs.pipes import retire_broken_pipe
from stream_guard.types import FaceResult, FrameResult, StreamInfo

log = logging.getLogger(__name__)
REOPEN_S = 10.0  # how often an events file the disk refused is opened again
ROTATION_CHECK_S = 1.0  # how often the events file's name is checked for a new file (log rotation)


def face_record(kind: str, result: FrameResult, face: FaceResult) -> dict[str, Any]:
    """The event for one face in one frame (``kind`` is ``track`` or ``verdict``)."""
    return {
        "type": kind,
        "stream_time_s": round(result.frame.pts_s, 4),
        "wall_time": time.time(),
        "frame_index": result.frame.index,
        "source": result.frame.source_id,
        "track_id": face.track_id,
        "track_state": face.state.value,
        "box": [round(float(v), 1) for v in face.box],
        "detection_score": round(face.detection_score, 4),
        "score": None if face.score is None else round(face.score, 4),
        "raw_score": None if face.raw_score is None else round(face.raw_score, 4),
        "verdict": face.verdict.value,
        "samples": face.samples,
    }


def frame_events(result: FrameResult) -> list[dict[str, Any]]:
    """Records for every face scored on this frame, plus one per verdict change."""
    records = []
    for face in result.faces:
        if face.scored:
            records.append(face_record("track", result, face))
        if face.verdict_changed:
            records.append(face_record("verdict", result, face))
    return records


class JsonlEventSink:
    """Appends events to a ``.jsonl`` file (or a text stream such as stdout), flushed per frame;
    each run's records go from its ``start`` to its ``summary``.
    Alerts are decided as for the webhook (``alerts``: the run's raise/clear options) and logged
    as ``alert`` records with the webhook's payload. The ``start`` record names the software, model
    and threshold behind the run's verdicts (``provenance``).

    A file the disk stops taking (it filled up) is opened again every :data:`REOPEN_S` seconds; the
    records meanwhile are lost, and the first line written again is an ``events_lost`` record that
    counts them, so the log heals and says where its gap is. ``close`` then fails, so the run ends
    saying so.

    A file moved or deleted under the run (logrotate, a person's ``mv``) is followed: within
    :data:`ROTATION_CHECK_S` the name is opened anew, and the new file begins with the run's ``start``
    record again, so each file says what judged its verdicts. (``copytruncate`` works as it is:
    the file is opened for appending.)

    A stream whose reader goes away (``--events - | head``) calls ``on_reader_gone`` if given (the
    run has no other output: it ends, as a filter does); otherwise the output fails."""

    name = "events"
    lossless = True
    records_summary = True

    def __init__(self, target: str | Path | IO[str], alerts: AlertOptions = AlertOptions(),
                 provenance: Provenance | None = None, on_reader_gone: Callable[[], None] | None = None) -> None:
        self._target = target
        self.on_reader_gone = on_reader_gone
        self._provenance = provenance
        self._fh: IO[str] | None = None
        self._owns = False
        self._alerts = AlertStateMachine(alerts, provenance)
        self.lost = 0  # records the disk did not take
        self._gap: dict[str, Any] | None = None  # the records lost since the file last took one
        self._reopen_at = 0.0
        self._start: dict[str, Any] | None = None  # the run's start record, for a rotated file's new start
        self._check_rotation_at = 0.0
        self._rotation_failed = False

    def open(self, info: StreamInfo) -> None:
        if isinstance(self._target, (str, Path)):
            path = Path(self._target)
            try:
                self._fh = path.open("a", encoding="utf-8")  # a log: a restarted monitor keeps the last run's
            except OSError as e:
                raise OutputError(f"--events {path}: cannot write ({e.strerror})") from e
            self._owns = True
        else:
            self._fh = self._target
        start = {"type": "start", "wall_time": time.time(), "source": info.source_id, "width": info.width,
                 "height": info.height, "fps": info.fps, "live": info.is_live}
        if self._provenance is not None:
            start.update(self._provenance.to_json())
        self._start = start
        self._check_rotation_at = time.monotonic() + ROTATION_CHECK_S
        self._write_all([start])

    def event(self, record: dict[str, Any]) -> None:
        """A non-frame record, with the alerts it closes: after a source record (the cause comes
        first), before the summary (which stays the last line)."""
        closed = [alert.to_json() for alert in self._alerts.on_record(record)]
        if record.get("type") == "summary":
            self._write_all(closed + [record])
        else:
            self._write_all([record] + closed)

    def write(self, result: FrameResult) -> None:
        self._write_all(frame_events(result) + [alert.to_json() for alert in self._alerts.update(result)])

    def _write_all(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        if self._owns and self._fh is not None and time.monotonic() >= self._check_rotation_at:
            self._follow_rotation()
        if self._fh is None and (self._gap is None or time.monotonic() < self._reopen_at or not self._reopen()):
            if self._gap is not None:
                self._gap["records"] += len(records)
            return
        assert self._fh is not None
        try:
            if self._gap is not None:
                self._fh.write(json.dumps(self._gap, separators=(",", ":")) + "\n")
            for record in records:
                self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._fh.flush()
        except OSError as e:
            if self._owns:
                self._lose(records, e)
            elif isinstance(e, BrokenPipeError) and self.on_reader_gone is not None:
                self._end_for_a_gone_reader()
            else:
                raise
            return
        if self._gap is not None:
            self.lost += self._gap["records"]
            log.warning("--events %s: writing again; %d record(s) were lost", self._target, self._gap["records"])
            self._gap = None

    def _follow_rotation(self) -> None:
        """Open the name anew if the file it named was moved away or deleted (its start record first)."""
        self._check_rotation_at = time.monotonic() + ROTATION_CHECK_S
        assert self._fh is not None
        path = Path(self._target)  # type: ignore[arg-type]
        try:
            named = path.stat()
        except FileNotFoundError:
            named = None
        except OSError:
            return  # cannot tell: keep writing where it writes
        held = os.fstat(self._fh.fileno())
        if named is not None and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            return
        try:
            fresh = path.open("a", encoding="utf-8")
        except OSError as e:
            if not self._rotation_failed:  # said once: it is tried again every check
                log.warning("--events %s: the file was moved away, and a new one cannot be made (%s): writing on "
                            "to the moved file", path, e.strerror or e)
            self._rotation_failed = True
            return
        self._rotation_failed = False
        with contextlib.suppress(OSError):
            self._fh.close()
        self._fh = fresh
        log.info("--events %s: the file was moved away (log rotation?): writing to a new one", path)
        if self._start is not None:
            fresh.write(json.dumps(self._start, separators=(",", ":")) + "\n")

    def _end_for_a_gone_reader(self) -> None:
        """The pipe's reader closed it: write no more and end the run. The pipe is swapped for the
        null device, so what is still buffered for it does not fail again when Python exits."""
        log.info("--events -: the reader of standard output went away: the run ends")
        stream, self._fh = self._fh, None
        assert stream is not None and self.on_reader_gone is not None
        retire_broken_pipe(stream)
        self.on_reader_gone()

    def _lose(self, records: list[dict[str, Any]], error: OSError) -> None:
        """The disk refused these records: close the file and open it again a little later."""
        if self._gap is None:
            log.error("--events %s: cannot write (%s): records are lost until it can be written again",
                      self._target, error.strerror or error)
            self._gap = {"type": "events_lost", "wall_time": time.time(), "records": 0,
                         "error": error.strerror or str(error)}
        self._gap["records"] += len(records)
        broken, self._fh = self._fh, None
        if broken is not None:
            with contextlib.suppress(OSError):
                broken.close()
        self._reopen_at = time.monotonic() + REOPEN_S

    def _reopen(self) -> bool:
        """Open the file again after the disk refused it, on a line of its own (a line cut short stays)."""
        path = Path(self._target)  # type: ignore[arg-type]
        try:
            ends_mid_line = path.stat().st_size > 0 and _last_byte(path) != b"\n"
            self._fh = path.open("a", encoding="utf-8")
            if ends_mid_line:
                self._fh.write("\n")
            return True
        except OSError:
            self._fh = None
            self._reopen_at = time.monotonic() + REOPEN_S
            return False

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.flush()
            finally:
                if self._owns:
                    fh.close()
        if self._gap is not None:
            self.lost += self._gap["records"]
        if self.lost:
            raise OutputError(f"--events {self._target}: {self.lost} record(s) could not be written (the errors "
                              "are above)")


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1)
