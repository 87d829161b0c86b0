"""The one interface every output implements."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from stream_guard.types import FrameResult, StreamInfo


@runtime_checkable
class Sink(Protocol):
    """Receives every analysed frame.

    ``lossless`` sinks (files, event logs) get every frame, in order; the others
    (windows, live views) may be handed only the newest frame when they fall behind.
    ``open`` is called once before the first ``write``; ``close`` is called once, also
    after a failure. A sink that raises is reported and detached; the others go on.
    A sink may also define ``event(record: dict)`` to receive non-frame events
    (source state changes, the run summary). One that keeps the summary for people to read
    (an events log, the live view) sets ``records_summary = True``: it is closed last, and its
    summary names the outputs that failed as they closed.
    """

    name: str
    lossless: bool

    def open(self, info: StreamInfo) -> None: ...

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...
