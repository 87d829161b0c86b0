"""One increasing timeline from a media stream's timestamps, across the points where they start again.

Joined recordings (``cat a.ts b.ts``), an HLS discontinuity or an encoder restarted mid-stream
send timestamps that jump back. Left as they are, a clock that never runs backwards stands still
until the new timestamps catch up (no face is sampled meanwhile), and a muxer refuses the sound.
"""
from __future__ import annotations

# A timestamp this far behind where the timeline has got to starts a new stretch; less is jitter.
JUMP_BACK_S = 1.0


class Timeline:
    """Maps a stream's own times onto the joined timeline: a time more than :data:`JUMP_BACK_S`
    behind where the timeline has got to moves it, and every later one, to go on from there."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def join(self, time_s: float, reached_s: float | None, resume_s: float | None = None) -> tuple[float, float]:
        """``time_s`` on the joined timeline, given where it has got to (None: nowhere yet), and
        how far back the stream jumped there (0.0 if it did not). After a jump back the timeline
        goes on from ``resume_s`` (pictures: a frame period after the last one), by default from ``reached_s``."""
        joined = time_s + self.offset_s
        if reached_s is None or joined >= reached_s - JUMP_BACK_S:
            return joined, 0.0
        resume = reached_s if resume_s is None else max(resume_s, reached_s)
        self.offset_s += resume - joined
        return resume, reached_s - joined
