"""Alerts: when a face has looked fake long enough to tell someone, and when to take it back.

:class:`AlertStateMachine` is pure (no threads, no clocks of its own): it is fed every
:class:`FrameResult` in order and returns the alerts that fire on that frame. Per track it
raises a ``fake`` alert after ``raise_windows`` consecutive scored windows whose verdict is
fake, and ``cleared`` after ``clear_windows`` consecutive scored windows whose verdict is
real; a track has at most one open alert. A track with an open alert that is not seen for
``gone_after_s`` seconds of stream time is cleared with reason ``gone``.

:class:`AlertSink` is the base of the outputs that act on alerts (webhook, speech, snapshots,
clips); the JSON Lines events run a machine of their own and log its alerts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from stream_guard.errors import ConfigError
from stream_guard.model.provenance import Provenance
from stream_guard.types import FaceResult, FrameResult, StreamInfo, Verdict

RAISED = "fake"
CLEARED = "cleared"

# why an alert fired
REASON_FAKE = "fake_windows"  # raise_windows consecutive fake windows
REASON_REAL = "real_windows"  # clear_windows consecutive real windows
REASON_GONE = "gone"  # the face left the picture
REASON_SOURCE = "source_reset"  # a live source dropped: every face is forgotten
REASON_END = "end_of_stream"  # the run ended with the alert still open


@dataclass(frozen=True, slots=True)
class AlertOptions:
    """``raise_windows``/``clear_windows``: consecutive scored windows with a fake/real verdict
    to raise/clear an alert; ``gone_after_s``: stream seconds unseen after which an open alert
    is cleared as ``gone``."""

    raise_windows: int = 3
    clear_windows: int = 5
    gone_after_s: float = 2.0

    def __post_init__(self) -> None:
        if self.raise_windows < 1:
            raise ConfigError("--alert-raise must be at least 1")
        if self.clear_windows < 1:
            raise ConfigError("--alert-clear must be at least 1")
        if not self.gone_after_s > 0:
            raise ConfigError("the alert gone time must be positive")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert transition for one face. ``kind`` is ``fake`` or ``cleared``."""

    kind: str
    track_id: int
    score: float | None
    verdict: str
    stream_time_s: float
    source: str
    box: tuple[float, float, float, float] | None
    reason: str
    wall_time: float = field(default_factory=time.time)
    provenance: Provenance | None = None  # the software, model and threshold that judged the face

    def to_json(self) -> dict[str, Any]:
        """The webhook payload (see the README's alert schema)."""
        what_judged = {} if self.provenance is None else self.provenance.to_json()
        return {
            "type": "alert", "alert": self.kind, "track_id": self.track_id,
            "score": None if self.score is None else round(self.score, 4), "verdict": self.verdict,
            "stream_time_s": round(self.stream_time_s, 4), "wall_time": self.wall_time, "source": self.source,
            "box": None if self.box is None else [round(v, 1) for v in self.box], "reason": self.reason,
            **what_judged,
        }


@dataclass(slots=True)
class _TrackAlertState:
    fake_run: int = 0
    real_run: int = 0
    open: bool = False
    last_seen_s: float = 0.0
    score: float | None = None
    verdict: str = Verdict.UNCERTAIN.value
    box: tuple[float, float, float, float] | None = None


class AlertStateMachine:
    """Per-track raise/clear logic; feed it every frame result, in order."""

    def __init__(self, options: AlertOptions = AlertOptions(), provenance: Provenance | None = None) -> None:
        self.options = options
        self.provenance = provenance  # named in every alert, when known
        self._tracks: dict[int, _TrackAlertState] = {}
        self._now_s = 0.0
        self._now_unix_s = time.time()  # when the frame or record being handled was received or made
        self._source = ""

    @property
    def open_tracks(self) -> list[int]:
        """Ids of the tracks with an open alert."""
        return [tid for tid, st in self._tracks.items() if st.open]

    def update(self, result: FrameResult) -> list[Alert]:
        """Process one frame; return the alerts it fires (usually none)."""
        now = result.frame.pts_s
        self._now_s = now
        self._now_unix_s = result.frame.received_unix_s
        self._source = result.frame.source_id
        alerts: list[Alert] = []
        for face in result.faces:
            st = self._tracks.setdefault(face.track_id, _TrackAlertState())
            st.last_seen_s = now
            st.box = tuple(float(v) for v in face.box)  # type: ignore[assignment]
            if face.score is not None:
                st.score = float(face.score)
            st.verdict = face.verdict.value
            if face.scored:
                alert = self._on_window(face, st, now)
                if alert is not None:
                    alerts.append(alert)
        seen = {f.track_id for f in result.faces}
        for tid in [t for t in self._tracks if t not in seen]:
            st = self._tracks[tid]
            if now - st.last_seen_s >= self.options.gone_after_s or now < st.last_seen_s:
                del self._tracks[tid]
                if st.open:
                    alerts.append(self._alert(CLEARED, tid, st, st.last_seen_s, REASON_GONE))
        return alerts

    def on_record(self, record: dict[str, Any]) -> list[Alert]:
        """The alerts a non-frame event closes: a live source that drops forgets its faces
        (``source_reset``); the summary ends the run (``end_of_stream``)."""
        kind = record.get("type")
        self._now_unix_s = float(record.get("wall_time") or time.time())
        if kind == "source" and record.get("state") in ("reconnecting", "failed"):
            return self.clear_all(REASON_SOURCE)
        if kind == "summary":
            return self.clear_all(REASON_END)
        return []

    def clear_all(self, reason: str) -> list[Alert]:
        """Close every open alert (the source dropped, the run ended) and forget all tracks."""
        alerts = [self._alert(CLEARED, tid, st, self._now_s, reason) for tid, st in self._tracks.items() if st.open]
        self._tracks.clear()
        return alerts

    def _on_window(self, face: FaceResult, st: _TrackAlertState, now: float) -> Alert | None:
        st.fake_run = st.fake_run + 1 if face.verdict is Verdict.FAKE else 0
        st.real_run = st.real_run + 1 if face.verdict is Verdict.REAL else 0
        if not st.open and st.fake_run >= self.options.raise_windows:
            st.open = True
            return self._alert(RAISED, face.track_id, st, now, REASON_FAKE)
        if st.open and st.real_run >= self.options.clear_windows:
            st.open = False
            st.fake_run = 0
            return self._alert(CLEARED, face.track_id, st, now, REASON_REAL)
        return None

    def _alert(self, kind: str, track_id: int, st: _TrackAlertState, t: float, reason: str) -> Alert:
        # stamped with the frame's (or record's) time, not the clock now: each output runs its own
        # state machine, and the same alert must carry the same wall_time in all of them
        return Alert(kind=kind, track_id=track_id, score=st.score, verdict=st.verdict, stream_time_s=t,
                     source=self._source, box=st.box, reason=reason, wall_time=self._now_unix_s,
                     provenance=self.provenance)


class AlertSink:
    """Base for outputs that act on alerts: runs the state machine on every frame (lossless,
    so no scored window is missed) and hands each alert to :meth:`on_alert`, which must not
    block (subclasses queue the slow work on their own thread)."""

    name = "alerts"
    lossless = True

    def __init__(self, options: AlertOptions = AlertOptions(), provenance: Provenance | None = None) -> None:
        self.machine = AlertStateMachine(options, provenance)

    def open(self, info: StreamInfo) -> None:  # subclasses start their threads here
        pass

    def write(self, result: FrameResult) -> None:
        for alert in self.machine.update(result):
            self.on_alert(alert)

    def event(self, record: dict[str, Any]) -> None:
        """A live source that drops forgets its faces: close their alerts; the summary ends the run."""
        for alert in self.machine.on_record(record):
            self.on_alert(alert)

    def on_alert(self, alert: Alert) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass
