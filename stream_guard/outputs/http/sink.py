"""The live view as a pipeline output: a lossy sink that feeds the HTTP server."""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

import av
import cv2

from stream_guard.model.provenance import Provenance
from stream_guard.outputs.alerts import Alert, AlertOptions, AlertSink
from stream_guard.outputs.events import frame_events
from stream_guard.outputs.http.live_mp4 import LiveMp4Encoder
from stream_guard.outputs.http.live_sound_mp4 import AAC_CODEC, LiveSoundMp4Encoder
from stream_guard.outputs.http.metrics import LiveMetrics
from stream_guard.outputs.http.options import ServeOptions
from stream_guard.outputs.http.server import LiveServer, describe
from stream_guard.outputs.http.state import LiveState, redact_record
from stream_guard.outputs.live_sound import LEAD_S
from stream_guard.sound_bus import SoundFeed
from stream_guard.types import FrameResult, StreamInfo

log = logging.getLogger(__name__)

JPEG_QUALITY = 80
FALLBACK_FPS = 30.0  # the videos' rate cap when the source does not say its frame rate


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), default=str)


class LiveViewSink:
    """``--serve``: dashboard, OBS overlay, H.264 and MJPEG video, SSE events, JSON API and Prometheus metrics.

    Lossy (``lossless = False``): the pipeline hands it only the newest frame when it falls
    behind, and nothing here waits on a browser. Frames are encoded only while a client of that
    video is connected (JPEG for MJPEG, one H.264 encoder shared by every MP4 viewer), and at
    most at the stream's frame rate. Given the source's ``sound``, the H.264 video has it beside
    it (``/sound.mp4``), encoded while the video is and on its clock.
    """

    name = "live-view"
    lossless = False
    records_summary = True

    def __init__(self, options: ServeOptions, provenance: Provenance, announce: IO[str] | None = None,
                 sound: SoundFeed | None = None) -> None:
        self.options = options
        self.provenance = provenance
        self._announce = announce if announce is not None else sys.stderr
        self.server: LiveServer | None = None
        self.state: LiveState | None = None
        self._metrics: LiveMetrics | None = None
        self._min_interval = 1.0 / FALLBACK_FPS
        self._last_frame = 0.0
        self._h264: LiveMp4Encoder | None = None
        self._sound = sound
        self._sound_mp4: LiveSoundMp4Encoder | None = None
        self._fps = FALLBACK_FPS

    @property
    def port(self) -> int | None:
        """The port listened on (useful with port 0), once open."""
        return None if self.server is None else self.server.port

    def open(self, info: StreamInfo) -> None:
        self.state = LiveState(info, self.provenance)
        self._metrics = LiveMetrics(self.provenance)
        fps = self._fps = info.fps if info.fps and info.fps > 0 else FALLBACK_FPS
        self._min_interval = 0.9 / fps  # a little slack so jitter does not halve the rate
        server = LiveServer(self.options, self.state, self._metrics,
                            sound_codec=None if self._sound is None else AAC_CODEC)
        server.start()
        self.server = server
        print(describe(self.options, server.port or self.options.port), file=self._announce, flush=True)

    def write(self, result: FrameResult) -> None:
        if self.state is None or self._metrics is None or self.server is None:
            return
        self.state.update(result)
        if self.server.mp4_clients == 0 and self._h264 is not None:
            self._stop_h264()
        now = time.monotonic()
        if now - self._last_frame < self._min_interval:
            return
        if self.server.mjpeg_clients > 0:
            self._last_frame = now
            bgr = cv2.cvtColor(result.annotated, cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if ok:
                self.server.publish_frame(buf.tobytes())
        if self.server.mp4_clients > 0:
            self._last_frame = now
            self._send_h264(result)
        self._send_sound(result)

    def _send_h264(self, result: FrameResult) -> None:
        assert self.server is not None
        height, width = result.annotated.shape[:2]
        encoder = self._h264
        if encoder is not None and not encoder.fits(width, height):
            self._stop_h264()  # a source that changed size: viewers reconnect to a new encoding
            encoder = None
        try:
            if encoder is None:
                encoder = self._h264 = LiveMp4Encoder(width, height, self._fps)
                if self._sound is not None:  # on the clock of the video, which starts at this frame
                    self._sound_mp4 = LiveSoundMp4Encoder(self._sound, result.frame.wallclock_s)
            announced = encoder.init is not None
            fragments = encoder.encode(result.annotated, result.frame.wallclock_s)
        except (av.error.FFmpegError, ValueError) as e:  # never stop the run for the live view
            log.warning("live view: H.264 encoding failed (%s); MP4 viewers are disconnected", e)
            self._stop_h264()
            return
        if not announced and encoder.init is not None and encoder.codec is not None:
            self.server.publish_mp4_start(encoder.init, encoder.codec)
        self.server.publish_mp4_fragments(fragments)

    def _send_sound(self, result: FrameResult) -> None:
        """The sound up to this picture: to the sound's viewers while the video is encoded, else dropped."""
        if self._sound is None or self.server is None:
            return
        encoder = self._sound_mp4
        if encoder is None:
            self._sound.take_until(result.frame.pts_s + LEAD_S)
            return
        announced = encoder.init is not None
        try:
            fragments = encoder.follow(result.frame.pts_s, result.frame.wallclock_s)
        except (av.error.FFmpegError, ValueError) as e:
            log.warning("live view: sound encoding failed (%s); the video goes on without sound", e)
            self._sound = self.server.sound_codec = None  # pages that reconnect ask for no sound
            self._stop_h264()
            return
        if not announced and encoder.init is not None:
            self.server.publish_mp4_start(encoder.init, encoder.codec, track="sound")
        self.server.publish_mp4_fragments(fragments, track="sound")

    def _stop_h264(self) -> None:
        """No one watches the H.264 video any more (or its size changed, or the run ends): it and its sound stop."""
        encoders, self._h264, self._sound_mp4 = (self._h264, self._sound_mp4), None, None
        if encoders == (None, None):
            return
        if self.server is not None:
            self.server.publish_mp4_end()
        for encoder in encoders:
            try:
                if encoder is not None:
                    encoder.close()
            except (av.error.FFmpegError, ValueError) as e:
                log.debug("live view: closing an encoder: %s", e)

    def count(self, result: FrameResult) -> None:
        """Every analysed frame, from :class:`LiveAlertFeed`'s thread (lossless; all that is done here is
        thread-safe): counted in the metrics, and its track and verdict records sent to ``/events`` and
        the pages' log, as the JSON Lines events have them. (From the lossy :meth:`write`, a browser that
        fell behind lost records, and the metrics undercounted frames and verdict changes.)"""
        if self.state is None or self._metrics is None or self.server is None:
            return
        self._metrics.observe(result)
        records = [redact_record(r) for r in frame_events(result)]
        if records:
            self.state.add_records(records)
            self.server.publish_events([_dumps(r) for r in records])

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
        self._stop_h264()
        server, self.server = self.server, None
        if server is not None:
            server.stop()


class LiveAlertFeed(AlertSink):
    """The live view's alerts, events and metrics. The live view itself is lossy, so a dropped frame
    could hide the window that raises an alert, a verdict change or a track record; this lossless
    output sees every frame and hands them over."""

    name = "live-view-alerts"

    def __init__(self, live: LiveViewSink, alerts: AlertOptions) -> None:
        super().__init__(alerts, live.provenance)
        self.live = live

    def write(self, result: FrameResult) -> None:
        self.live.count(result)
        super().write(result)

    def on_alert(self, alert: Alert) -> None:
        self.live.event(alert.to_json())
