"""Video sources: files, network streams, webcams, screens and the embedded demo."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Iterator

from stream_guard.sources.base import DropPolicy, FrameSource, OpensInWith
from stream_guard.sources.probe import DEFAULT_MAX_MEGAPIXELS
from stream_guard.sources.pyav_source import PyAVSource
from stream_guard.sources.spec import PORTAL_FORMAT, SourceSpec, parse_source, redact_url, with_input_options
from stream_guard.types import Frame, SoundChunk, StreamInfo

__all__ = ["DropPolicy", "FrameSource", "PacedSource", "SourceSpec", "open_source", "parse_source", "redact_url",
           "with_input_options"]

log = logging.getLogger(__name__)

# A paced file waits out gaps between its frames up to this long (a variable-rate screen recording
# that sat still); a longer one is a jump in the timestamps (joined recordings, a camera that was
# off), played on at once rather than waited out in silence. FFmpeg's player draws the line here too.
MAX_PACED_GAP_S = 10.0


class PacedSource(OpensInWith):
    """Wraps a source so frames come no faster than their timestamps (``--realtime``), unless it
    turns out live when it opens (a live stream comes at its own pace; a URL may be either)."""

    def __init__(self, inner: FrameSource) -> None:
        self.inner = inner
        self.source_id = inner.source_id
        self._live = False

    def open(self) -> StreamInfo:
        info = self.inner.open()
        self._live = info.is_live
        return info

    def frames(self) -> Iterator[Frame]:
        if self._live:
            yield from self.inner.frames()
            return
        start: float | None = None
        previous_s = 0.0
        for frame in self.inner.frames():
            now = time.monotonic()
            gap = frame.pts_s - previous_s
            if start is None:
                start = now - frame.pts_s
            elif gap > MAX_PACED_GAP_S:
                log.warning("the video's timestamps jump %.1f s ahead at stream time %.2f s (joined recordings, "
                            "or a recorder that was paused?): --realtime plays on without waiting it out",
                            gap, previous_s)
                start = max(now, start + previous_s) - frame.pts_s
            previous_s = frame.pts_s
            wait = start + frame.pts_s - now
            if wait > 0:
                time.sleep(wait)
            # "received" is when the paced frame is released, so latency excludes the pacing wait
            yield dataclasses.replace(frame, wallclock_s=time.monotonic())

    def close(self) -> None:
        self.inner.close()


def open_source(spec: SourceSpec, realtime: bool = False, demo_seconds: float = 20.0,
                deinterlace: str = "auto", max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                sound: Callable[[SoundChunk], None] | None = None, tone_map: bool = True,
                video_stream: int | None = None, sound_device: str | None = None) -> FrameSource:
    """Build (not yet open) the source for a parsed spec; ``deinterlace``: auto, always or off;
    ``max_megapixels`` picks the largest stream within it when there are several (HLS variants),
    unless ``video_stream`` names one (its ID: an MPEG-TS PID, an HLS variant's number...);
    ``sound`` receives the source's decoded sound, if it has any (the demo has none); ``tone_map``
    False reads HDR video as it is, without mapping it to SDR; ``sound_device`` (``--sound``), with
    ``sound``: that device's sound instead of the source's own (a live source only)."""
    source: FrameSource
    if spec.kind == "demo":
        from stream_guard.sources.demo import DemoSource

        source = DemoSource(seconds=demo_seconds)
    elif spec.format == PORTAL_FORMAT:
        from stream_guard.sources.portal_screen import PortalScreenSource

        source = PortalScreenSource(spec, deinterlace=deinterlace, max_megapixels=max_megapixels, tone_map=tone_map)
    elif spec.format == "x11grab":
        from stream_guard.sources.x11_capture import X11CaptureSource

        source = X11CaptureSource(spec, deinterlace=deinterlace, max_megapixels=max_megapixels, tone_map=tone_map)
    else:
        source = PyAVSource(spec, deinterlace=deinterlace, max_megapixels=max_megapixels,
                            sound=None if sound_device else sound, tone_map=tone_map, video_stream=video_stream)
    if sound_device and sound is not None:
        from stream_guard.sources.sound_device import DeviceSoundSource

        source = DeviceSoundSource(source, sound_device, sound)
    if realtime and (not spec.is_live or spec.kind == "network"):  # a URL may be a recording (PyAVSource)
        source = PacedSource(source)
    return source
