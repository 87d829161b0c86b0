"""The one interface every video source implements."""
from __future__ import annotations

import enum
from typing import Iterator, Protocol, Self, runtime_checkable

from stream_guard.types import Frame, StreamInfo


class DropPolicy(str, enum.Enum):
    """What the capture queue does when the consumer is slower than the source."""

    DROP_OLDEST = "drop-oldest"  # live sources: latency must not grow
    BLOCK = "block"  # files: no frame may be lost


@runtime_checkable
class FrameSource(Protocol):
    """A video source. ``open`` returns what is known about the stream; ``frames``
    yields decoded RGB frames until the stream ends; ``close`` is idempotent."""

    source_id: str

    def open(self) -> StreamInfo: ...

    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "FrameSource": ...

    def __exit__(self, *exc: object) -> None: ...


class OpensInWith:
    """``with source:`` opens the source and closes it after, for any class with ``open`` and ``close``."""

    def open(self) -> StreamInfo:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
