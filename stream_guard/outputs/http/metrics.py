"""Prometheus metrics of one live view server, on its own registry (no global state)."""
from __future__ import annotations

import time
from dataclasses import fields
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from stream_guard.model.provenance import Provenance
from stream_guard.outputs.alerts import CLEARED, RAISED
from stream_guard.types import FrameResult, StageTimes, Verdict

SOURCE_STATES = ["connected", "reconnecting", "failed", "blank", "ended"]
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
STAGES = [f.name.removesuffix("_ms") for f in fields(StageTimes)]
CONTENT_TYPE = CONTENT_TYPE_LATEST
VIDEOS = ["h264", "mjpeg"]  # the live view's two videos, as the viewer metrics label them
SOUND = "aac"  # the sound sent with the H.264 video, counted in the bytes sent beside the videos


class LiveMetrics:
    """Every metric ``/metrics`` exposes; updated from the sink thread (the client is thread-safe)."""

    def __init__(self, provenance: Provenance) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fps = Gauge("stream_guard_fps", "Analysed frames per second", registry=r)
        self.latency = Histogram("stream_guard_latency_seconds", "Frame received -> annotated frame out",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.faces = Gauge("stream_guard_faces", "Faces in the latest frame", registry=r)
        self.frames = Counter("stream_guard_frames", "Frames analysed", registry=r)
        self.dropped = Counter("stream_guard_frames_dropped", "Frames dropped by the live capture queue", registry=r)
        self.verdicts = Counter("stream_guard_verdict_changes", "Face verdict changes, by the new verdict",
                                ["verdict"], registry=r)
        self.alerts = Counter("stream_guard_alerts", "Alerts, by kind (fake = raised, cleared)", ["alert"],
                              registry=r)
        self.open_alerts = Gauge("stream_guard_open_alerts", "Faces with an open fake alert", registry=r)
        self.stage = Counter("stream_guard_stage_seconds", "Time spent per analysis stage", ["stage"], registry=r)
        self.source_state = Enum("stream_guard_source_state", "State of the video source", states=SOURCE_STATES,
                                 registry=r)
        self.model = Info("stream_guard_model", "The deepfake model in use", registry=r)
        self.uptime = Gauge("stream_guard_uptime_seconds", "Seconds since the live view started", registry=r)
        self.viewers = Gauge("stream_guard_live_viewers", "Clients watching the live view's video, by video",
                             ["video"], registry=r)
        self.video_bytes = Counter("stream_guard_live_video_bytes", "Bytes of live view video sent, by video "
                                   "(and of its sound, as aac)", ["video"], registry=r)
        started = time.monotonic()
        self.uptime.set_function(lambda: time.monotonic() - started)
        self.model.info({"name": provenance.model, "trained": str(provenance.model_trained).lower(),
                         "version": provenance.model_version, "sha256": provenance.model_sha256,
                         "threshold": f"{provenance.threshold:.4f}", "stream_guard": provenance.software_version})
        for v in Verdict:
            self.verdicts.labels(v.value)
        for s in STAGES:
            self.stage.labels(s)
        for kind in (RAISED, CLEARED):
            self.alerts.labels(kind)
        for video in [*VIDEOS, SOUND]:
            self.video_bytes.labels(video)
        self._dropped_seen = 0

    def observe(self, result: FrameResult) -> None:
        """Count one analysed frame."""
        self.frames.inc()
        self.fps.set(result.fps)
        self.latency.observe(max(0.0, result.latency_ms) / 1000.0)
        self.faces.set(len(result.faces))
        if result.frames_dropped > self._dropped_seen:  # a running count: add what is new
            self.dropped.inc(result.frames_dropped - self._dropped_seen)
            self._dropped_seen = result.frames_dropped
        for s in STAGES:
            ms = getattr(result.times, f"{s}_ms")
            if ms > 0:
                self.stage.labels(s).inc(ms / 1000.0)
        for face in result.faces:
            if face.verdict_changed:
                self.verdicts.labels(face.verdict.value).inc()

    def record(self, record: dict[str, Any]) -> None:
        """Follow source state changes, alerts and the end of the run."""
        kind = record.get("type")
        if kind == "source" and record.get("state") in SOURCE_STATES:
            self.source_state.state(record["state"])
        elif kind == "summary":
            self.source_state.state("ended")
        elif kind == "alert" and record.get("alert") in (RAISED, CLEARED):
            self.alerts.labels(record["alert"]).inc()
            if record["alert"] == RAISED:
                self.open_alerts.inc()
            else:
                self.open_alerts.dec()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
