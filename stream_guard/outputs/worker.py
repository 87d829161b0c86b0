"""One thread per sink, fed through a bounded queue, so a slow or failing output
never blocks the analysis thread or the other outputs."""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Union

from stream_guard.outputs.base import Sink
from stream_guard.types import FrameResult, StreamInfo

log = logging.getLogger(__name__)
_CLOSE = object()

Item = Union[FrameResult, dict, object]


class SinkWorker(threading.Thread):
    """Runs ``sink`` on its own thread. Lossless sinks get a blocking queue (nothing is
    dropped; the analysis thread waits when they fall behind); the others get a
    one-slot queue that keeps only the newest frame."""

    def __init__(self, sink: Sink, info: StreamInfo, queue_size: int = 32) -> None:
        super().__init__(name=f"sink-{sink.name}", daemon=True)
        self.sink = sink
        self.info = info
        self._q: queue.Queue[Item] = queue.Queue(maxsize=queue_size if sink.lossless else 1)
        self.error: BaseException | None = None
        self.dropped = 0
        self.written = 0
        self.opened = threading.Event()
        self._failed = threading.Event()

    @property
    def failed(self) -> bool:
        return self._failed.is_set()

    def pending(self) -> int:
        """Items queued for this sink and not yet handled (for monitoring)."""
        return self._q.qsize()

    def submit(self, item: Item) -> None:
        """Queue a frame result or an event record (never raises, never blocks a lossy sink)."""
        if self._failed.is_set():
            return
        if self.sink.lossless or not isinstance(item, FrameResult):
            self._put_unless_failed(item)
            return
        try:
            self._q.put_nowait(item)
        except queue.Full:
            try:
                self._q.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass
            try:
                self._q.put_nowait(item)
            except queue.Full:
                self.dropped += 1

    def close(self, timeout: float | None = None) -> None:
        """Ask the sink to finish what is queued and close; wait for it."""
        if self.is_alive():
            self._put_unless_failed(_CLOSE)
            self.join(timeout)

    def _put_unless_failed(self, item: Item) -> None:
        """Blocking put that gives up once the sink has failed (its thread no longer drains)."""
        while not self._failed.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _fail(self, e: BaseException, what: str) -> None:
        self.error = e
        self._failed.set()
        # A sink that cannot open is reported by the pipeline (it stops the run); later failures only here.
        level = logging.DEBUG if what == "opening" else logging.ERROR
        log.log(level, "output '%s' failed while %s: %s (other outputs continue)", self.sink.name, what, e)

    def run(self) -> None:
        try:
            try:
                self.sink.open(self.info)
            except Exception as e:  # noqa: BLE001 - isolate every sink failure
                self._fail(e, "opening")
                return
            finally:
                self.opened.set()
            while True:
                item: Any = self._q.get()
                if item is _CLOSE:
                    return
                try:
                    if isinstance(item, FrameResult):
                        self.sink.write(item)
                        self.written += 1
                    else:
                        handler = getattr(self.sink, "event", None)
                        if handler is not None:
                            handler(item)
                except Exception as e:  # noqa: BLE001
                    self._fail(e, "writing")
                    return
        finally:
            try:
                self.sink.close()
            except Exception as e:  # noqa: BLE001
                log.error("output '%s' failed while closing: %s", self.sink.name, e)
                if self.error is None:
                    self.error = e
                self._failed.set()  # what it wrote is incomplete (a file's last bytes, its index)
