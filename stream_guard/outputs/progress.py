"""The frames of a file being read, as a progress bar on the terminal (``scan``, ``watch FILE``)."""
from __future__ import annotations

from typing import TextIO

from tqdm import tqdm

from stream_guard.types import FrameResult, StreamInfo

_LABEL_CHARS = 40  # a long path is shown by its end


class FrameProgress:
    """A lossy sink that draws a bar of a file's frames (out of their count when the file gives it): a long
    video otherwise shows nothing for many minutes, as if the run had hung. A live stream has no end to
    count to: it gets no bar. The sink may be opened again (scan scores a still after a first run).
    ``position``: the bar's line, counted from the cursor's (1: under ``scan``'s files bar)."""

    name = "progress"
    lossless = False

    def __init__(self, label: str, err: TextIO, max_frames: int | None = None, position: int = 0) -> None:
        self._label = label if len(label) <= _LABEL_CHARS else "…" + label[-(_LABEL_CHARS - 1):]
        self._err = err
        self._max_frames = max_frames
        self._position = position
        self._bar: tqdm | None = None

    def open(self, info: StreamInfo) -> None:
        self.close()
        if info.is_live:
            return
        total = info.frame_count
        if total is not None and self._max_frames is not None:
            total = min(total, self._max_frames)
        self._bar = tqdm(total=total, desc=self._label, unit="frame", leave=False, position=self._position,
                         file=self._err, dynamic_ncols=True)

    def write(self, result: FrameResult) -> None:
        if self._bar is not None:  # frames skipped while the bar was drawn still count: go by the index
            self._bar.update(result.frame.index + 1 - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
