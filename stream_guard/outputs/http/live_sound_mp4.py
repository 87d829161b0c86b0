"""The live view's sound: the source's sound as AAC in a fragmented MP4 of its own (``/sound.mp4``),
on the clock of the H.264 video it goes with, for a second MSE ``SourceBuffer``.

Sound and video are two files rather than two tracks of one because FFmpeg's MP4 muxer, cutting a
fragment at every packet of two tracks, stamps them wrongly (video frames 40 ms apart came out 0
and 101 ms apart; audio packets got repeated timestamps). With one track per file each fragment is
one AAC packet (1024 samples, 21 ms), stamped where :class:`LiveSound` placed it.
"""
from __future__ import annotations

from stream_guard.outputs.http.live_mp4 import FragmentedMp4Output, Mp4Fragment
from stream_guard.outputs.live_sound import AAC_PRIMING_SAMPLES, LiveSound
from stream_guard.sound_bus import SoundFeed

AAC_CODEC = "mp4a.40.2"  # RFC 6381 name of AAC-LC, what FFmpeg's encoder writes


class LiveSoundMp4Encoder:
    """AAC in fragmented MP4, timed like the :class:`LiveMp4Encoder` whose first frame was taken at ``t0_s``."""

    codec = AAC_CODEC

    def __init__(self, feed: SoundFeed, t0_s: float) -> None:
        self._out = FragmentedMp4Output()
        self._sound = LiveSound(self._out.container, "aac", feed, first_sample=AAC_PRIMING_SAMPLES)
        self._t0 = t0_s

    @property
    def init(self) -> bytes | None:
        """The init segment, once the first packet is written."""
        return self._out.init

    def follow(self, pts_s: float, t_s: float) -> list[Mp4Fragment]:
        """The picture of stream time ``pts_s`` was taken at ``t_s`` (the video encoder's clock):
        encode the sound up to it; the fragments completed (every one a place to start decoding)."""
        self._sound.follow(pts_s, t_s - self._t0)
        return [Mp4Fragment(data, keyframe=True) for data in self._out.take()]

    def close(self) -> list[Mp4Fragment]:
        """Flush the encoder and the muxer; the last fragments."""
        self._sound.close()
        self._out.container.close()
        return [Mp4Fragment(data, keyframe=True) for data in self._out.take()]
