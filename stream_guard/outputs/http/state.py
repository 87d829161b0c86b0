"""What the live view knows about the run, written by the sink thread, read by the server."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from stream_guard.model.provenance import Provenance
from stream_guard.sources.spec import redact_text
from stream_guard.types import FrameResult, NotJudged, StreamInfo

HISTORY_S = 60.0  # score history kept per face (the dashboard's chart)
FORGET_S = 60.0  # a face not seen for this long is forgotten
LOG_SIZE = 200  # verdict records kept for pages that connect later

def redact_record(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of an event record whose top-level texts carry no URL credentials."""
    return {k: redact_text(v) if isinstance(v, str) else v for k, v in record.items()}


@dataclass(slots=True)
class FaceView:
    """One face as the live view shows it."""

    track_id: int
    box: list[float]
    score: float | None
    verdict: str
    state: str
    stream_time_s: float
    wall_time: float
    seen: float  # time.monotonic() when last seen
    not_judged: str | None = None  # why it is tracked but not judged ("too small", "cut off"), None when judged
    history: deque = field(default_factory=deque)  # (wall_time, score)

    def to_json(self, with_history: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"track_id": self.track_id, "score": self.score, "verdict": self.verdict,
                             "track_state": self.state, "box": self.box, "last_seen_stream_s": self.stream_time_s,
                             "last_seen_wall_time": self.wall_time,
                             "too_small": self.not_judged == NotJudged.TOO_SMALL.value, "not_judged": self.not_judged}
        if with_history:
            d["history"] = [[round(t, 3), s] for t, s in self.history]
        return d


class LiveState:
    """Thread-safe snapshot of the run: stream, counters, faces, recent verdicts."""

    def __init__(self, info: StreamInfo, provenance: Provenance) -> None:
        self._lock = threading.Lock()
        self.info = info
        self.provenance = provenance
        self.source = redact_text(info.source_id)
        self.started = time.monotonic()
        self.start_record = {"type": "start", "wall_time": time.time(), "source": self.source,
                             "width": info.width, "height": info.height, "fps": info.fps, "live": info.is_live,
                             **provenance.to_json()}
        self._frames = 0
        self._dropped = 0
        self._fps = 0.0
        self._latency_ms: float | None = None
        self._source_state = "connected"
        self._source_record: dict[str, Any] | None = None
        self._faces: dict[int, FaceView] = {}
        self._current: tuple[int, ...] = ()
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self._summary: dict[str, Any] | None = None

    def update(self, result: FrameResult) -> None:
        """Take in one analysed frame (sink thread)."""
        now, wall = time.monotonic(), time.time()
        with self._lock:
            self._frames += 1
            self._dropped = result.frames_dropped
            self._fps = result.fps
            self._latency_ms = result.latency_ms
            for face in result.faces:
                view = self._faces.get(face.track_id)
                box = [round(float(v), 1) for v in face.box]
                if view is None:
                    view = self._faces[face.track_id] = FaceView(face.track_id, box, None, face.verdict.value,
                                                                  face.state.value, 0.0, wall, now)
                view.box, view.verdict, view.state = box, face.verdict.value, face.state.value
                view.not_judged = None if face.not_judged is None else face.not_judged.value
                view.stream_time_s, view.wall_time, view.seen = round(result.frame.pts_s, 4), wall, now
                if face.score is not None:
                    view.score = round(face.score, 4)
                    if face.scored:
                        view.history.append((wall, view.score))
                while view.history and view.history[0][0] < wall - HISTORY_S:
                    view.history.popleft()
            self._current = tuple(f.track_id for f in result.faces)
            for tid in [t for t, v in self._faces.items() if now - v.seen > FORGET_S]:
                del self._faces[tid]

    def add_records(self, records: list[dict[str, Any]]) -> None:
        """Remember verdict changes, alerts, source state and the summary (sink threads)."""
        with self._lock:
            for r in records:
                kind = r.get("type")
                if kind in ("verdict", "alert"):
                    self._log.append(r)
                elif kind == "source":
                    self._source_state = str(r.get("state"))
                    self._source_record = r
                    if self._source_state != "connected":
                        self._current = ()
                elif kind == "summary":
                    self._summary = r
                    self._source_state = "ended"
                    self._current = ()

    @property
    def source_state(self) -> str:
        with self._lock:
            return self._source_state

    def status(self) -> dict[str, Any]:
        """``/api/status``."""
        with self._lock:
            return {"source": self.source, "state": self._source_state, "width": self.info.width,
                    "height": self.info.height, "source_fps": self.info.fps, "live": self.info.is_live,
                    "fps": round(self._fps, 2),
                    "latency_ms": None if self._latency_ms is None else round(self._latency_ms, 2),
                    "frames": self._frames, "dropped": self._dropped, "faces": len(self._current),
                    "trained": self.provenance.model_trained, **self.provenance.to_json(),
                    "uptime_s": round(time.monotonic() - self.started, 3), "ended": self._summary is not None}

    def tracks(self) -> dict[str, Any]:
        """``/api/tracks``: the faces in the latest frame, with their score history."""
        with self._lock:
            faces = [self._faces[t].to_json() for t in self._current if t in self._faces]
        return {"tracks": faces}

    def replay(self) -> list[dict[str, Any]]:
        """Records a page that connects now needs first: start, source state, recent verdicts and
        alerts, summary."""
        with self._lock:
            out = [self.start_record]
            if self._source_record is not None:
                out.append(self._source_record)
            out.extend(self._log)
            if self._summary is not None:
                out.append(self._summary)
            return out
