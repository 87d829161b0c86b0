"""Live re-streaming (``--stream-to URL``): the annotated video pushed to a streaming server.

RTMP(S) (FLV: nginx-rtmp, MediaMTX, OBS's media source via a server, YouTube and Twitch ingest),
RTSP (pushed with RECORD over TCP, as MediaMTX accepts) or UDP (MPEG-TS, for a player or a
receiver on the network). H.264 with a keyframe every ``gop_s`` seconds so that a viewer who
joins late starts within that time, and, given a ``sound`` feed, the source's sound as AAC
(:class:`~stream_guard.outputs.live_sound.LiveSound`).

The output is lossy: it is handed the newest frame when it falls behind, and frames are stamped
with the wall-clock time they are sent, so a slow network lowers the frame rate, never the
analysis. A connection that fails (the server is not up yet, restarts or drops us) is retried
with back-off while the run goes on; frames in between are not sent. URLs are logged as scheme and
host only, since stream keys travel in the path.
"""
from __future__ import annotations

import contextlib
import logging
import random
import time
from typing import Callable
from urllib.parse import urlsplit

import av

from stream_guard.errors import ConfigError
from stream_guard.outputs.live_sound import SOUND_CODECS, LiveSound
from stream_guard.outputs.video_file import add_timed_h264_stream, keyframe_every, mux_at_ms
from stream_guard.outputs.webhook import redact
from stream_guard.sound_bus import SoundFeed
from stream_guard.sources.pyav_source import unresolvable_host
from stream_guard.sources.capture import ReconnectPolicy
from stream_guard.types import FrameResult, StreamInfo

log = logging.getLogger(__name__)

# scheme -> (muxer, its options)
_TARGETS: dict[str, tuple[str, dict[str, str]]] = {
    "rtmp": ("flv", {}), "rtmps": ("flv", {}),
    "rtsp": ("rtsp", {"rtsp_transport": "tcp"}),
    "udp": ("mpegts", {}),
}
RETRY = ReconnectPolicy(initial_s=1.0, max_s=10.0)
GOP_S = 2.0


def stream_target(url: str) -> tuple[str, dict[str, str]]:
    """The muxer and its options for ``url``; an unsupported scheme is a :class:`ConfigError`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "udp" and parts.hostname:
        try:
            port = parts.port
        except ValueError:
            port = None
        if not port:  # FFmpeg takes it and every send fails with "Invalid argument"
            raise ConfigError(f"--stream-to {redact(url)}: udp:// needs a port, such as udp://{parts.hostname}:1234")
    if scheme in _TARGETS and parts.hostname:
        return _TARGETS[scheme]
    if scheme == "srt":
        raise ConfigError("--stream-to: SRT is not in PyAV's FFmpeg build; use rtmp://, rtsp:// or udp://")
    raise ConfigError(f"--stream-to {redact(url)}: give an rtmp://, rtmps://, rtsp:// or udp:// URL with a host")


class LiveStreamSink:
    """Pushes ``result.annotated`` to ``url``; reconnects with ``retry`` back-off when sending fails."""

    name = "stream-out"
    lossless = False

    def __init__(self, url: str, retry: ReconnectPolicy = RETRY, gop_s: float = GOP_S,
                 clock: Callable[[], float] = time.monotonic, sound: SoundFeed | None = None) -> None:
        self.url = url
        self.sound = sound
        self.muxer, self.muxer_options = stream_target(url)
        self.retry = retry
        self.gop_s = gop_s
        self.frames_sent = 0
        self.connections = 0
        self._clock = clock
        self._rng = random.Random()
        self._fps = 30.0
        self._size = (0, 0)  # (width, height)
        self._container: av.container.OutputContainer | None = None
        self._stream = None
        self._live_sound: LiveSound | None = None
        self._t0 = 0.0
        self._last_ms = -1
        self._fresh = False  # connected, and no frame sent on this connection yet
        self._failures = 0  # consecutive failed connections
        self._retry_at = 0.0

    def open(self, info: StreamInfo) -> None:
        self._fps = info.fps if info.fps and info.fps > 0 else 30.0
        self._size = (info.width - info.width % 2, info.height - info.height % 2)

    def write(self, result: FrameResult) -> None:
        now = self._clock()
        try:
            if self._container is None:
                if now < self._retry_at:
                    if self.sound is not None:  # nothing to send it with: drop it, it would be stale
                        self.sound.take_until(result.frame.pts_s)
                    return
                self._connect(now)
            self._send(result, now)
        except (av.error.FFmpegError, OSError) as e:
            self._lost(e, now)

    def close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            try:
                container.mux(self._stream.encode(None))
                if self._live_sound is not None:
                    self._live_sound.close()
                container.close()
            except (av.error.FFmpegError, OSError) as e:
                log.debug("stream-to %s: closing: %s", redact(self.url), e)
        log.info("stream-to %s: %d frames sent over %d connection(s)", redact(self.url), self.frames_sent,
                 self.connections)

    def _connect(self, now: float) -> None:
        """A new container and encoder; FFmpeg connects when the first frame is sent."""
        container = av.open(self.url, mode="w", format=self.muxer, options=self.muxer_options)
        self._stream = add_timed_h264_stream(container, self._fps, *self._size,
                                             **keyframe_every(self.gop_s, self._fps))
        self._live_sound = None if self.sound is None else LiveSound(container, SOUND_CODECS[self.muxer], self.sound)
        self._container = container
        self._t0, self._last_ms, self._fresh = now, -1, True

    def _send(self, result: FrameResult, now: float) -> None:
        ms = round((now - self._t0) * 1000)
        if ms <= self._last_ms:
            return  # two frames within a millisecond: keep the first
        assert self._container is not None and self._stream is not None
        mux_at_ms(self._container, self._stream, result.annotated, ms)
        if self._live_sound is not None:
            self._live_sound.follow(result.frame.pts_s, ms / 1000)
        self._last_ms = ms
        self.frames_sent += 1
        if self._fresh:  # the first frame of a connection went out: it is up
            self._fresh = False
            self.connections += 1
            if self._failures:
                log.warning("stream-to %s: sending again after %d failed attempt(s)", redact(self.url), self._failures)
            self._failures = 0

    def _lost(self, error: Exception, now: float) -> None:
        """Drop the connection and schedule the next attempt."""
        container, self._container = self._container, None
        self._live_sound = None
        if container is not None:
            with contextlib.suppress(av.error.FFmpegError, OSError):  # the connection is gone already
                container.close()
        self._failures += 1
        delay = self.retry.delay(self._failures, self._rng)
        self._retry_at = now + delay
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        why = getattr(error, "strerror", None) or error
        host = unresolvable_host(self.url) if self._failures == 1 else None  # FFmpeg says only "I/O error"
        if host is not None:
            why = f"cannot resolve host name '{host}'"
        log.log(level, "stream-to %s: cannot send (%s); retrying in %.1f s, then with back-off up to %g s",
                redact(self.url), why, delay, self.retry.max_s)
