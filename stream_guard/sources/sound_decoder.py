"""The sound of a live source, decoded as it is demuxed beside the pictures."""
from __future__ import annotations

import logging
from typing import Callable

import av

from stream_guard.types import SOUND_LAYOUT, SOUND_RATE, SoundChunk

log = logging.getLogger(__name__)


class SoundDecoder:
    """Decodes ``stream``'s packets to :class:`SoundChunk` items (48 kHz stereo float) and hands
    them to ``publish``. ``stream_s`` maps a time in the container to the video clock (None
    before the first picture, whose sound is not kept). Damaged sound is skipped, never fatal:
    the pictures are what is analysed."""

    def __init__(self, stream: av.audio.stream.AudioStream, publish: Callable[[SoundChunk], None],
                 stream_s: Callable[[float], float | None]) -> None:
        self.stream = stream
        self._publish = publish
        self._stream_s = stream_s
        self._resampler = av.AudioResampler(format="fltp", layout=SOUND_LAYOUT, rate=SOUND_RATE)
        self._errors = 0

    def push(self, packet: av.Packet) -> None:
        try:
            for decoded in packet.decode():
                for frame in self._resampler.resample(decoded):
                    self._emit(frame)
        except (av.error.FFmpegError, ValueError) as e:
            self._errors += 1
            if self._errors == 1:
                log.warning("the source's sound cannot be decoded (%s): damaged sound is skipped", e)

    def _emit(self, frame: av.AudioFrame) -> None:
        if frame.time is None:
            return
        pts_s = self._stream_s(frame.time)
        if pts_s is None:
            return
        self._publish(SoundChunk(frame.to_ndarray(), pts_s))
