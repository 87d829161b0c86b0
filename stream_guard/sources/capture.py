"""The capture thread: reads a source into a bounded queue, reconnecting live sources.

What travels through the queue: :class:`Frame` items, :class:`SourceEvent` items
(connected / reconnecting / failed: the analysis thread resets tracks across a
gap), and finally exactly one :class:`EndOfStream` (carrying the error, if any).
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Union

from stream_guard.errors import SourceError, StreamGuardError
from stream_guard.sources.base import DropPolicy, FrameSource
from stream_guard.types import Frame, StreamInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """A change in the source's connection state."""

    state: str  # "connected" | "reconnecting" | "failed"
    wall_time: float
    detail: str = ""
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class EndOfStream:
    error: StreamGuardError | None = None


CaptureItem = Union[Frame, SourceEvent, EndOfStream]


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Bounded, jittered exponential back-off for live sources. ``max_attempts=0``: retry forever."""

    initial_s: float = 0.25
    max_s: float = 2.0
    max_attempts: int = 0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_s, self.initial_s * 2.0 ** min(max(0, attempt - 1), 30))
        return base * (1.0 + self.jitter * (2 * rng.random() - 1))


class FrameQueue:
    """A bounded queue whose full-queue behaviour is the :class:`DropPolicy`."""

    def __init__(self, maxsize: int, policy: DropPolicy, stop: threading.Event) -> None:
        self._q: queue.Queue[CaptureItem] = queue.Queue(maxsize=maxsize)
        self.policy = policy
        self._stop = stop
        self.dropped = 0

    def put(self, item: CaptureItem) -> bool:
        """Enqueue; returns False if stopping. Control items are never dropped."""
        if self.policy is DropPolicy.DROP_OLDEST and isinstance(item, Frame):
            while True:
                try:
                    self._q.put_nowait(item)
                    return True
                except queue.Full:
                    try:
                        old = self._q.get_nowait()
                    except queue.Empty:
                        continue
                    if isinstance(old, Frame):
                        self.dropped += 1
                    else:  # keep control items: put it back in front of the new frame
                        self._put_blocking(old)
        return self._put_blocking(item)

    def _put_blocking(self, item: CaptureItem) -> bool:
        while not self._stop.is_set() or isinstance(item, EndOfStream):
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                if isinstance(item, EndOfStream) and self._stop.is_set():
                    return False
        return False

    def get(self, timeout: float) -> CaptureItem | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def qsize(self) -> int:
        return self._q.qsize()


class CaptureThread(threading.Thread):
    """Runs ``source.frames()`` on its own thread; the first ``open()`` happens in the
    caller (so a bad source fails fast with a clear error), reopening happens here."""

    def __init__(
        self,
        source: FrameSource,
        out: FrameQueue,
        stop: threading.Event,
        live: bool,
        reconnect: ReconnectPolicy = ReconnectPolicy(),
        on_event: Callable[[SourceEvent], None] | None = None,
        max_frames: int | None = None,
    ) -> None:
        super().__init__(name="capture", daemon=True)
        self.source = source
        self.out = out
        self.stop = stop
        self.live = live
        self.reconnect = reconnect
        self.on_event = on_event
        self.max_frames = max_frames
        self.frames_read = 0
        self.stop_reading = False
        self._rng = random.Random()

    def _emit(self, event: SourceEvent) -> None:
        log.info("source %s: %s %s", self.source.source_id, event.state, event.detail)
        if self.on_event:
            self.on_event(event)
        self.out.put(event)

    def _read_until_end(self) -> None:
        for frame in self.source.frames():
            if self.stop.is_set():
                return
            if not self.out.put(frame):
                return
            self.frames_read += 1
            if self.max_frames is not None and self.frames_read >= self.max_frames:
                self.stop_reading = True
                return

    def _reopen(self) -> StreamInfo | None:
        attempt = 0
        while not self.stop.is_set():
            attempt += 1
            if self.reconnect.max_attempts and attempt > self.reconnect.max_attempts:
                return None
            self._emit(SourceEvent("reconnecting", time.time(), attempt=attempt))
            if self.stop.wait(self.reconnect.delay(attempt, self._rng)):
                return None
            self.source.close()
            try:
                info = self.source.open()
            except SourceError as e:
                log.debug("reopen attempt %d failed: %s", attempt, e)
                continue
            self._emit(SourceEvent("connected", time.time(), attempt=attempt))
            return info
        return None

    def run(self) -> None:
        error: StreamGuardError | None = None
        try:
            while not self.stop.is_set():
                try:
                    self._read_until_end()
                    if not self.live or self.stop.is_set() or self.stop_reading:
                        break
                    detail = "stream ended"
                except SourceError as e:
                    if not self.live:
                        error = e
                        break
                    detail = str(e)
                log.warning("source %s dropped: %s", self.source.source_id, detail)
                if self._reopen() is None:
                    if not self.stop.is_set():
                        error = SourceError(f"{self.source.source_id}: gave up reconnecting")
                        self._emit(SourceEvent("failed", time.time(), detail=str(error)))
                    break
        except StreamGuardError as e:
            error = e
        except Exception as e:  # noqa: BLE001 - a bug in a source must still end the stream
            log.exception("capture thread crashed")
            error = SourceError(f"{self.source.source_id}: capture failed ({type(e).__name__}: {e})")
        finally:
            self.source.close()
            self.out.put(EndOfStream(error))
