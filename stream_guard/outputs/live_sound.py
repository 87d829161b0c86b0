"""The source's sound written beside live pictures (``--stream-to``, a live source's ``--out``).

Live outputs stamp each picture by when it arrived or was sent, not by its place in the
stream, so the sound cannot simply keep its own timestamps. :class:`LiveSound` places it on
the output's clock with one offset, *output time minus stream time*, taken from the pictures
it follows: a sound at stream time *t* is written where the picture of stream time *t* was.
The offset is held steady, so the sound plays without gaps or overlaps while the pictures'
stamps jitter with network and analysis delays; it is moved only when the pictures have
drifted from it for a while (:data:`DRIFT_S` in the median of the last :data:`DRIFT_FRAMES`),
or at once when they jump (:data:`JUMP_S`: a reconnected source's clock restarting).

Sound lost on the way (a stalled output, a network gap) becomes silence of the same length, up
to :data:`MAX_FILL_S`; a longer gap leaves the sound stream with a gap of its own. Sound that
falls more than :data:`MAX_LAG_S` behind the pictures (a source whose audio stream sends
nothing) is made up with silence as the pictures go: muxers interleave by time and would
otherwise hold every picture back waiting for it.
"""
from __future__ import annotations

import logging
import statistics
from collections import deque
from fractions import Fraction

import av
import numpy as np

from stream_guard.sound_bus import SoundFeed
from stream_guard.types import SOUND_CHANNELS, SOUND_LAYOUT, SOUND_RATE, SoundChunk

log = logging.getLogger(__name__)

DRIFT_S = 0.04  # within what viewers notice (ITU-R BT.1359: sound 45 ms early, 125 ms late)
DRIFT_FRAMES = 15
JUMP_S = 2.0
MAX_FILL_S = 3.0
LEAD_S = 0.2  # sound written this far past the latest picture (its offset is known by then)
MAX_LAG_S = 1.0
_TOLERANCE = 0.02  # closer than this to where the sound left off counts as continuous
# FFmpeg's AAC encoder starts each stream with one frame of priming, which an MP4 without an edit
# list (a fragmented one) plays as sound: starting the track one frame in keeps the first packet
# at 0, where the muxer would otherwise move it, and every sound where it belongs.
AAC_PRIMING_SAMPLES = 1024

# the sound codec each live container carries
SOUND_CODECS = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".webm": "libopus", ".avi": "libmp3lame",
                "flv": "aac", "mpegts": "aac", "rtsp": "aac"}


class LiveSound:
    """A sound stream in ``container`` (``codec``), fed from ``feed`` as pictures are written."""

    def __init__(self, container: av.container.OutputContainer, codec: str, feed: SoundFeed,
                 first_sample: int | None = None) -> None:
        """``first_sample``: where the sound starts on the output's clock, silence until the first
        sound comes (for a muxer that moves a track's first packet to time 0); None: at the first sound."""
        self._container = container
        self._feed = feed
        self._out = container.add_stream(codec, rate=SOUND_RATE)
        self._out.layout = SOUND_LAYOUT
        self._out.codec_context.time_base = Fraction(1, SOUND_RATE)
        if codec == "aac":  # FFmpeg's default (twoloop) costs 1.7x the CPU of fast (0.73 against 0.44 s per 10 s)
            self._out.options = {"aac_coder": "fast"}
        self._resampler: av.AudioResampler | None = None  # made at the first frame (the codec's format)
        self._offset: float | None = None  # output seconds minus stream seconds
        self._recent: deque[float] = deque(maxlen=DRIFT_FRAMES)
        self._next: int | None = None  # the next sample's place on the output clock
        self._first_sample = first_sample
        self.silence_s = 0.0  # silence put in for sound that never came
        self.resyncs = 0

    def follow(self, pts_s: float, out_s: float) -> None:
        """The picture of stream time ``pts_s`` was written at ``out_s`` on the output's clock:
        write the sound up to just past it."""
        self._place(out_s - pts_s)
        if self._next is None and self._first_sample is not None:
            self._next = self._first_sample
        for chunk in self._feed.take_until(pts_s + LEAD_S):
            self._write(chunk)
        self._keep_up(round((out_s - MAX_LAG_S) * SOUND_RATE))

    def close(self) -> None:
        """Encode what the codec still holds (the sound left in the feed belongs to later pictures)."""
        if self._resampler is not None:
            for frame in self._resampler.resample(None):
                self._encode(frame)
        self._container.mux(self._out.encode(None))

    def _keep_up(self, target: int) -> None:
        """Silence up to sample ``target`` where the sound has not reached it (a longer wait than
        :data:`MAX_FILL_S` is left as a gap)."""
        if self._next is None:
            if target <= 0:
                return
            self._next = 0
        lag = target - self._next
        if lag > MAX_FILL_S * SOUND_RATE:
            self._restart_at(target)
        elif lag > 0:
            self._append(np.zeros((SOUND_CHANNELS, lag), np.float32))
            self.silence_s += lag / SOUND_RATE

    def _place(self, offset: float) -> None:
        self._recent.append(offset)
        if self._offset is None:
            self._offset = offset
            return
        if abs(offset - self._offset) > JUMP_S:
            moved = offset
        else:
            median = statistics.median(self._recent)
            if len(self._recent) < min(5, DRIFT_FRAMES) or abs(median - self._offset) <= DRIFT_S:
                return
            moved = median
        log.debug("sound moved by %+.3f s to follow the pictures", moved - self._offset)
        self._offset = moved
        self._recent.clear()
        self.resyncs += 1

    def _write(self, chunk: SoundChunk) -> None:
        assert self._offset is not None
        samples = chunk.samples
        start = round((chunk.pts_s + self._offset) * SOUND_RATE)
        if self._next is None:
            if start + samples.shape[1] <= 0:
                return  # sound from before this output's first picture
            self._next = max(0, start)
        gap = start - self._next
        if gap < -_TOLERANCE * SOUND_RATE:  # overlaps what was written: keep only the new part
            samples = samples[:, -gap:]
            if samples.shape[1] == 0:
                return
        elif gap > _TOLERANCE * SOUND_RATE:
            if gap <= MAX_FILL_S * SOUND_RATE:
                self._append(np.zeros((SOUND_CHANNELS, gap), np.float32))
                self.silence_s += gap / SOUND_RATE
            else:
                self._restart_at(start)
        self._append(samples)

    def _restart_at(self, start: int) -> None:
        """Leave a gap: finish the frames in hand, continue the sound at sample ``start``."""
        if self._resampler is not None:
            for frame in self._resampler.resample(None):
                self._encode(frame)
            self._resampler = None
        self._next = start

    def _append(self, samples: np.ndarray) -> None:
        assert self._next is not None
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32), format="fltp",
                                           layout=SOUND_LAYOUT)
        frame.sample_rate = SOUND_RATE
        frame.pts, frame.time_base = self._next, Fraction(1, SOUND_RATE)
        self._next += samples.shape[1]
        if self._resampler is None:
            codec = self._out.codec_context
            self._resampler = av.AudioResampler(format=codec.format, layout=codec.layout, rate=SOUND_RATE,
                                                frame_size=codec.frame_size or None)
        for converted in self._resampler.resample(frame):
            self._encode(converted)

    def _encode(self, frame: av.AudioFrame) -> None:
        self._container.mux(self._out.encode(frame))
