"""The live view as a pipeline output: a lossy sink that feeds the HTTP server."""
from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

import cv2

from stream_guard.outputs.alerts import Alert, AlertOptions, AlertSink
from stream_guard.outputs.events import frame_events
from stream_guard.outputs.http.metrics import LiveMetrics
from stream_guard.outputs.http.options import ServeOptions
from stream_guard.outputs.http.server import LiveServer, describe
from stream_guard.outputs.http.state import LiveState, ModelInfo, redact_record
from stream_guard.types import FrameResult, StreamInfo

JPEG_QUALITY = 80
FALLBACK_FPS = 30.0  # MJPEG rate cap when the source does not say its frame rate


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), default=str)


class LiveViewSink:
    """``--serve``: dashboard, OBS overlay, MJPEG, SSE events, JSON API and Prometheus metrics.

    Lossy (``lossless = False``): the pipeline hands it only the newest frame when it falls
    behind, and nothing here waits on a browser. Frames are JPEG-encoded only while an MJPEG
    client is connected, and at most at the stream's frame rate.
    """

    name = "live-view"
    lossless = False

    def __init__(self, options: ServeOptions, model: ModelInfo, announce: IO[str] | None = None) -> None:
        self.options = options
        self.model = model
        self._announce = announce if announce is not None else sys.stderr
        self.server: LiveServer | None = None
        self.state: LiveState | None = None
        self._metrics: LiveMetrics | None = None
        self._min_interval = 1.0 / FALLBACK_FPS
        self._last_jpeg = 0.0

    @property
    def port(self) -> int | None:
        """The port listened on (useful with port 0), once open."""
        return None if self.server is None else self.server.port

    def open(self, info: StreamInfo) -> None:
        self.state = LiveState(info, self.model)
        self._metrics = LiveMetrics(self.model.name, self.model.trained)
        fps = info.fps if info.fps and info.fps > 0 else FALLBACK_FPS
        self._min_interval = 0.9 / fps  # a little slack so jitter does not halve the rate
        server = LiveServer(self.options, self.state, self._metrics)
        server.start()
        self.server = server
        print(describe(self.options, server.port or self.options.port), file=self._announce, flush=True)

    def write(self, result: FrameResult) -> None:
        if self.state is None or self._metrics is None or self.server is None:
            return
        self.state.update(result)
        self._metrics.observe(result)
        records = [redact_record(r) for r in frame_events(result)]
        if records:
            self.state.add_records(records)
            self.server.publish_events([_dumps(r) for r in records])
        now = time.monotonic()
        if self.server.mjpeg_clients > 0 and now - self._last_jpeg >= self._min_interval:
            self._last_jpeg = now
            bgr = cv2.cvtColor(result.annotated, cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if ok:
                self.server.publish_frame(buf.tobytes())

    def event(self, record: dict[str, Any]) -> None:
        """Source state changes, the summary and (from :class:`LiveAlertFeed`'s thread: all that is
        done here is thread-safe) alerts: shown on the pages, counted in the metrics."""
        if self.state is None or self._metrics is None or self.server is None:
            return
        record = redact_record(record)
        self.state.add_records([record])
        self._metrics.record(record)
        self.server.publish_events([_dumps(record)])

    def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()


class LiveAlertFeed(AlertSink):
    """The live view's alerts. The live view itself is lossy, so a dropped frame could hide the
    window that raises an alert; this lossless output sees every frame and hands the alerts over."""

    name = "live-view-alerts"

    def __init__(self, live: LiveViewSink, alerts: AlertOptions) -> None:
        super().__init__(alerts)
        self.live = live

    def on_alert(self, alert: Alert) -> None:
        self.live.event(alert.to_json())
