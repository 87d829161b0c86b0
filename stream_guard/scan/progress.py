"""The frames of the file being scanned, as a second progress bar under the files' bar."""
from __future__ import annotations

from typing import TextIO

from tqdm import tqdm

from stream_guard.types import FrameResult, StreamInfo

_LABEL_CHARS = 40  # a long path is shown by its end


class FrameProgress:
    """A lossy sink that draws a bar of the current file's frames (their count when the file says it): a long
    video otherwise leaves the files' bar still for many minutes, as if the scan had hung. It may be opened
    again (a still is scored after its first run) and is closed with the file."""

    name = "scan-progress"
    lossless = False

    def __init__(self, label: str, err: TextIO, max_frames: int | None = None) -> None:
        self._label = label if len(label) <= _LABEL_CHARS else "…" + label[-(_LABEL_CHARS - 1):]
        self._err = err
        self._max_frames = max_frames
        self._bar: tqdm | None = None

    def open(self, info: StreamInfo) -> None:
        self.close()
        total = info.frame_count
        if total is not None and self._max_frames is not None:
            total = min(total, self._max_frames)
        self._bar = tqdm(total=total, desc=self._label, unit="frame", leave=False, position=1, file=self._err,
                         dynamic_ncols=True)

    def write(self, result: FrameResult) -> None:
        if self._bar is not None:  # frames skipped while the bar was drawn still count: go by the index
            self._bar.update(result.frame.index + 1 - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
