"""Notices a live source whose picture has gone blank: still connected and sending frames, but all
one colour (a covered lens or closed privacy shutter, a capture card's "no signal" screen, an
encoder's black slate, a Wayland desktop read as X11). A monitor that sees no faces there should
say why rather than look quietly content.

Only a sparse grid of pixels is looked at, twice a second of video, so the check costs nothing
next to decoding.
"""
from __future__ import annotations

import numpy as np

from stream_guard.types import Frame

BLANK_AFTER_S = 5.0  # uniform for this long (of stream time: a burst of buffered frames counts as what it shows)
CHECK_EVERY_S = 0.5
FLAT_RANGE = 16  # grey levels: noise and compression ripple on a black or flat picture stay within
_GRID = 48  # about this many samples along the longer side


def is_uniform(image: np.ndarray) -> bool:
    """Whether ``image`` (H, W, 3 uint8) is one flat colour: in every channel, the 2nd to 98th
    percentile of a grid of samples lie within :data:`FLAT_RANGE` (a stray cursor or logo aside)."""
    step = max(1, max(image.shape[:2]) // _GRID)
    sample = image[step // 2::step, step // 2::step].reshape(-1, image.shape[2])
    low, high = np.percentile(sample, (2, 98), axis=0)
    return bool((high - low).max() < FLAT_RANGE)


class BlankPictureWatch:
    """Fed a live source's frames in order; :meth:`update` says when the picture turns blank
    (after :data:`BLANK_AFTER_S` of uniform frames) and when it comes back."""

    def __init__(self, after_s: float = BLANK_AFTER_S) -> None:
        self.after_s = after_s
        self.blank = False
        self.blank_for_s = 0.0  # how long the picture was blank, when it came back
        self._uniform_since: float | None = None
        self._next_check = float("-inf")

    def reset(self) -> None:
        """Forget the past (a reconnect: the new connection starts afresh)."""
        self.blank, self._uniform_since, self._next_check = False, None, float("-inf")

    def update(self, frame: Frame) -> str | None:
        """``"blank"`` when the picture has just been uniform for long enough, ``"back"`` when a
        blank picture has just gained content (:attr:`blank_for_s` says for how long), else None."""
        now = frame.pts_s
        if now < self._next_check:
            return None
        self._next_check = now + CHECK_EVERY_S
        if is_uniform(frame.image):
            if self._uniform_since is None:
                self._uniform_since = now
            if not self.blank and now - self._uniform_since >= self.after_s:
                self.blank = True
                return "blank"
            return None
        since, self._uniform_since = self._uniform_since, None
        if self.blank:
            self.blank, self.blank_for_s = False, now - since
            return "back"
        return None
