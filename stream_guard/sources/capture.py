"""The capture thread: reads a source into a bounded queue, reconnecting live sources.

What travels through the queue: :class:`Frame` items, :class:`SourceEvent` items
(connected / reconnecting / failed, and blank while a live picture is one flat
colour: the analysis thread resets tracks across a gap), and finally exactly one
:class:`EndOfStream` (carrying the error, if any).
"""
from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Union

from stream_guard.errors import SourceEnded, SourceError, StreamGuardError
from stream_guard.sources.base import DropPolicy, FrameSource
from stream_guard.sources.blank_picture import BlankPictureWatch
from stream_guard.types import Frame, StreamInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """A change in the source's connection state."""

    state: str  # "connected" | "reconnecting" | "failed" | "blank" (connected, but the picture is one flat colour)
    wall_time: float
    detail: str = ""
    attempt: int = 0  # 0 for the first connection, then the reconnect attempt number
    downtime_s: float | None = None  # on "connected" after a drop: seconds since its last frame before the drop
    source: str = ""  # the source's display name (credentials redacted)


@dataclass(frozen=True, slots=True)
class EndOfStream:
    error: StreamGuardError | None = None


CaptureItem = Union[Frame, SourceEvent, EndOfStream]


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Bounded, jittered exponential back-off for live sources. ``max_attempts=0``: retry forever.

    The delay before attempt ``n`` is ``initial_s * 2**(n-1)`` with +-``jitter`` (relative)
    and never more than ``max_s``: a source that comes back is reopened within about
    ``max_s`` plus one open.
    """

    initial_s: float = 0.25
    max_s: float = 1.0
    max_attempts: int = 0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = self.initial_s * 2.0 ** min(max(0, attempt - 1), 30)
        return max(0.0, min(self.max_s, base * (1.0 + self.jitter * (2 * rng.random() - 1))))


class FrameQueue:
    """A bounded FIFO whose full-queue behaviour for frames is the :class:`DropPolicy`.

    Control items (:class:`SourceEvent`, :class:`EndOfStream`) are never dropped and never
    reordered: DROP_OLDEST removes the oldest *frame*, wherever it sits in the queue.
    """

    def __init__(self, maxsize: int, policy: DropPolicy, stop: threading.Event) -> None:
        self._items: deque[CaptureItem] = deque()
        self._cond = threading.Condition()
        self.maxsize = max(1, maxsize)
        self.policy = policy
        self._stop = stop
        self.dropped = 0

    def _drop_oldest_frame(self) -> bool:
        for i, old in enumerate(self._items):
            if isinstance(old, Frame):
                del self._items[i]
                self.dropped += 1
                return True
        return False

    def put(self, item: CaptureItem) -> bool:
        """Enqueue; returns False if stopping. A live frame never waits (the oldest queued
        frame makes room); everything else waits for room. Only the final
        :class:`EndOfStream` is still queued after stop, if there is room within 0.1 s."""
        with self._cond:
            if self.policy is DropPolicy.DROP_OLDEST and isinstance(item, Frame):
                if len(self._items) < self.maxsize or self._drop_oldest_frame():
                    self._append(item)
                    return True
            final = isinstance(item, EndOfStream)
            while True:
                if self._stop.is_set() and not final:
                    return False
                if len(self._items) < self.maxsize:
                    self._append(item)
                    return True
                if not self._cond.wait(0.1) and final and self._stop.is_set():
                    return False

    def _append(self, item: CaptureItem) -> None:
        self._items.append(item)
        self._cond.notify_all()

    def get(self, timeout: float) -> CaptureItem | None:
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout):
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def qsize(self) -> int:
        with self._cond:
            return len(self._items)


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
        self._blank = BlankPictureWatch() if live else None  # files may well fade to black
        self._last_frame_at: float | None = None  # time.monotonic() of the last frame read: when a drop began
        # reopened, no frame yet: (the attempt that reopened it, when the drop began). It is "connected" only
        # once a frame comes, so a source that opens and fails at once (a window x11grab cannot read) goes on
        # backing off as one outage rather than flapping between connected and reconnecting.
        self._reopened: tuple[int, float] | None = None

    def _emit(self, event: SourceEvent) -> None:
        event = dataclasses.replace(event, source=self.source.source_id)
        log.log(logging.WARNING if event.state == "blank" else logging.INFO, "source %s: %s %s",
                self.source.source_id, event.state, event.detail)
        if self.on_event:
            self.on_event(event)
        self.out.put(event)

    def _read_until_end(self) -> None:
        for frame in self.source.frames():
            if self.stop.is_set():
                return
            if self._reopened is not None:
                attempt, dropped_at = self._reopened
                self._reopened = None
                self._emit(SourceEvent("connected", time.time(), attempt=attempt,
                                       downtime_s=round(time.monotonic() - dropped_at, 3)))
            if self.out.policy is DropPolicy.BLOCK:
                # every frame will be analysed: convert it here, alongside detection on the next thread.
                # A drop-oldest queue's frames are converted when taken (PendingImage): those dropped never are.
                frame.convert()
            if not self.out.put(frame):
                return
            if self._blank is not None:
                self._note_blank_picture(frame)
            self.frames_read += 1
            self._last_frame_at = frame.wallclock_s  # a frame may come late: one released by a read time-out
            if self.max_frames is not None and self.frames_read >= self.max_frames:
                self.stop_reading = True
                return

    def _note_blank_picture(self, frame: Frame) -> None:
        assert self._blank is not None
        change = self._blank.update(frame)
        if change == "blank":
            self._emit(SourceEvent("blank", time.time(), detail=f"the picture has been one flat colour for "
                                   f"{self._blank.after_s:.0f} s (covered lens, no signal, or a black screen)"))
        elif change == "back":
            self._emit(SourceEvent("connected", time.time(), detail="the picture is back",
                                   downtime_s=round(self._blank.blank_for_s, 3)))

    def _reopen(self, reason: str) -> StreamInfo | None:
        """Reopen with back-off until it works, the policy gives up (None) or stop is set (None). After a
        reopen that gave no frame, the attempts (and the back-off) go on from there."""
        attempt, dropped_at = self._reopened or (0, None)
        self._reopened = None
        if dropped_at is None:
            # a stream that stalls is noticed only when its read times out: the drop began with its last frame
            dropped_at = self._last_frame_at if self._last_frame_at is not None else time.monotonic()
        while not self.stop.is_set():
            attempt += 1
            if self.reconnect.max_attempts and attempt > self.reconnect.max_attempts:
                return None
            self._emit(SourceEvent("reconnecting", time.time(), detail=reason, attempt=attempt))
            if self.stop.wait(self.reconnect.delay(attempt, self._rng)):
                return None
            self.source.close()
            try:
                info = self.source.open()
            except SourceEnded:
                raise
            except SourceError as e:
                log.debug("reopen attempt %d failed: %s", attempt, e)
                reason = str(e)
                continue
            if self._blank is not None:
                self._blank.reset()
            self._reopened = (attempt, dropped_at)  # connected once its first frame comes
            return info
        return None

    def run(self) -> None:
        error: StreamGuardError | None = None
        try:
            if self.live:  # the caller opened the source: say so, so state gauges start at "connected"
                self._emit(SourceEvent("connected", time.time()))
            while not self.stop.is_set():
                try:
                    self._read_until_end()
                    if not self.live or self.stop.is_set() or self.stop_reading:
                        break
                    detail = "stream ended"
                except SourceEnded:
                    raise
                except SourceError as e:
                    if not self.live:
                        error = e
                        break
                    detail = str(e)
                log.log(logging.DEBUG if self._reopened else logging.WARNING, "source %s dropped: %s",
                        self.source.source_id, detail)
                if self._reopen(detail) is None:
                    if not self.stop.is_set():
                        error = SourceError(f"{self.source.source_id}: gave up reconnecting")
                        self._emit(SourceEvent("failed", time.time(), detail=str(error)))
                    break
        except SourceEnded as e:  # on purpose (the user stopped sharing): the end, as a file's
            log.info("source %s ended: %s", self.source.source_id, e)
        except StreamGuardError as e:
            error = e
        except Exception as e:  # noqa: BLE001 - a bug in a source must still end the stream
            log.exception("capture thread crashed")
            error = SourceError(f"{self.source.source_id}: capture failed ({type(e).__name__}: {e})")
        finally:
            self.source.close()
            self.out.put(EndOfStream(error))
