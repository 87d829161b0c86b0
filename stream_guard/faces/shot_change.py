"""Hard cuts between shots, so that a face of the next shot is never taken for one of the last.

Edited video (a broadcast switching cameras, an interview cut between two people, a clip
stitched from several) can put a different face where the last one was, from one frame to the
next. The tracker matches by position, so without this the new face would inherit the old
face's id, its score memory and its open alert: for a moment it would be judged with the other
person's scores.

A frame is a candidate cut when its small picture differs from the previous one by at least
``min_change`` (mean absolute difference, 0-255, over a 64x36 thumbnail in the three channels)
and by at least ``ratio`` times the mean change of the ``history`` frames before it, as
content-based shot detectors measure it. The ratio keeps a fast pan, a shaking camera or a
flickering light, which change every frame a lot, from counting; ``min_change`` keeps noise in a
still picture from counting; and a full history is needed, so the first frames of a stream and
of a shot cannot be cuts. A camera flash (paparazzi, strobes) changes one or two frames as much
as a cut does, then the picture comes back: so a candidate is confirmed only if, ``confirm``
frames later, the picture still differs by ``min_change`` from each of the ``history`` pictures
before the candidate (the candidate may be a flash's end, the frames before it lit by it).
A cut is therefore reported ``confirm`` frames (a fifth of a second at 30 fps) after it happens.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from stream_guard.errors import ConfigError

THUMBNAIL = (64, 36)  # width, height: enough to see a scene change, cheap at any frame size
_SUBSAMPLE_TO = 256  # px wide: frames are decimated to about this before the area-averaging resize


@dataclass(frozen=True)
class ShotChangeOptions:
    """``min_change``: mean absolute change of the thumbnail (0-255) a cut must reach (0 turns cut detection
    off); ``ratio``: how many times the recent frame-to-frame change it must also be; ``history``: how many
    recent changes that is the mean of; ``confirm``: frames after which the picture must still differ from
    the one before the cut (a flash does not)."""

    min_change: float = 30.0
    ratio: float = 3.0
    history: int = 8
    confirm: int = 6  # a film's flash washed out 5 frames: 3 took it for a cut

    def __post_init__(self) -> None:
        if not (self.min_change >= 0.0 and self.ratio >= 1.0 and self.history >= 1 and self.confirm >= 1):
            raise ConfigError("shot change options: min_change >= 0, ratio >= 1, history >= 1 and confirm >= 1")


class ShotChangeDetector:
    """Says, frame by frame, whether a cut has just been confirmed. One per stream, one thread."""

    def __init__(self, options: ShotChangeOptions = ShotChangeOptions()) -> None:
        self.options = options
        self._recent: deque[float] = deque(maxlen=options.history)  # frame-to-frame changes
        self._pictures: deque[np.ndarray] = deque(maxlen=options.history + 1)  # the latest thumbnails
        self._before_candidate: list[np.ndarray] | None = None  # the pictures before a cut not yet confirmed
        self._waited = 0

    def reset(self) -> None:
        """Forget the pictures seen (after a gap in the stream: the next frame is compared with nothing)."""
        self._before_candidate = None
        self._recent.clear()
        self._pictures.clear()

    def is_cut(self, image: np.ndarray) -> bool:
        """Whether a cut is confirmed on ``image`` (HxWx3 uint8): it happened ``confirm`` frames ago."""
        if self.options.min_change <= 0.0:
            return False
        small = thumbnail(image)
        before = list(self._pictures)
        self._pictures.append(small)
        if not before:
            return False
        change = _difference(small, before[-1])
        if self._before_candidate is not None:
            self._waited += 1
            if self._waited < self.options.confirm:
                return False
            earlier, self._before_candidate = self._before_candidate, None
            if min(_difference(small, picture) for picture in earlier) >= self.options.min_change:
                self._recent.clear()  # a new shot: its own history, before another cut can be found
                return True
            self._recent.append(change)  # a flash: the shot goes on
            return False
        full = len(self._recent) == self._recent.maxlen
        if full and change >= self.options.min_change and change >= self.options.ratio * float(np.mean(self._recent)):
            self._before_candidate, self._waited = before, 0
            return False
        self._recent.append(change)
        return False


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The frame as a 64x36 picture (int16, for differences), averaged over areas."""
    step = max(1, image.shape[1] // _SUBSAMPLE_TO)
    decimated = image[::step, ::step] if step > 1 else image
    return cv2.resize(decimated, THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.int16)
