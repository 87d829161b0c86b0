"""Between the pipeline's threads and the Tk thread.

:class:`LatestResultSink` is a pipeline output that keeps only the newest
:class:`FrameResult` in a one-slot queue; the Tk thread takes it when it polls.
:class:`PipelineThread` runs one :class:`Pipeline` on a background thread and keeps how
it ended (summary or error) for the Tk thread to read. Neither touches Tk.
"""
from __future__ import annotations

import logging
import queue
import threading

from stream_guard.config import RunConfig
from stream_guard.errors import StreamGuardError
from stream_guard.pipeline import Pipeline, RunSummary
from stream_guard.types import FrameResult, StreamInfo

log = logging.getLogger(__name__)


class LatestResultSink:
    """A lossy sink: ``write`` replaces whatever the Tk thread has not taken yet."""

    name = "gui"
    lossless = False

    def __init__(self) -> None:
        self._slot: queue.Queue[FrameResult] = queue.Queue(maxsize=1)
        self.info: StreamInfo | None = None
        self.written = 0

    def open(self, info: StreamInfo) -> None:
        self.info = info

    def write(self, result: FrameResult) -> None:
        self.written += 1
        while True:
            try:
                self._slot.put_nowait(result)
                return
            except queue.Full:
                try:
                    self._slot.get_nowait()
                except queue.Empty:
                    pass

    def take(self) -> FrameResult | None:
        """The newest result not yet taken, or None (never blocks)."""
        try:
            return self._slot.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        pass


class PipelineThread(threading.Thread):
    """Runs ``Pipeline(config, [sink]).run()``; afterwards ``summary`` or ``error`` says how it ended."""

    def __init__(self, config: RunConfig, sink: LatestResultSink) -> None:
        super().__init__(name="gui-pipeline", daemon=True)
        self.pipeline = Pipeline(config, extra_sinks=[sink])
        self.summary: RunSummary | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.summary = self.pipeline.run()
        except StreamGuardError as e:
            self.error = str(e)
        except Exception as e:
            log.exception("the pipeline failed")
            self.error = f"internal error: {type(e).__name__}: {e}"

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask the pipeline to stop and wait for this thread; True if it ended."""
        self.pipeline.stop()
        self.join(timeout)
        return not self.is_alive()
