"""Between the pipeline's threads and the Tk thread.

:class:`LatestResultSink` is a pipeline output that keeps only the newest
:class:`FrameResult` in a one-slot queue; the Tk thread takes it when it polls.
:class:`PipelineThread` runs one :class:`Pipeline` on a background thread and keeps how
it ended (summary or error) for the Tk thread to read; :class:`PictureThread` scores a picture
as ``scan`` does. None of them touches Tk.
"""
from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

from stream_guard.config import RunConfig
from stream_guard.errors import StreamGuardError
from stream_guard.file_analysis import FileAnalysis, analyse_file
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


class _RunThread(threading.Thread):
    """Runs ``_work`` in the background; afterwards ``error`` says why it failed (None if it did not)."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.error: str | None = None

    def _work(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            self._work()
        except StreamGuardError as e:
            self.error = str(e)
        except Exception as e:
            log.exception("the analysis failed")
            self.error = f"internal error: {type(e).__name__}: {e}"


class PipelineThread(_RunThread):
    """Runs ``Pipeline(config, [sink]).run()``; afterwards ``summary`` or ``error`` says how it ended."""

    def __init__(self, config: RunConfig, sink: LatestResultSink) -> None:
        super().__init__("gui-pipeline")
        self.pipeline = Pipeline(config, extra_sinks=[sink])
        self.summary: RunSummary | None = None

    def _work(self) -> None:
        self.summary = self.pipeline.run()

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask the pipeline to stop and wait for this thread; True if it ended."""
        self.pipeline.stop()
        self.join(timeout)
        return not self.is_alive()


class PictureThread(_RunThread):
    """Scores the picture at ``path`` as ``stream-guard scan`` does (a one-second still), each annotated
    frame going to ``sink``; afterwards ``analysis`` or ``error`` says how it ended."""

    def __init__(self, config: RunConfig, sink: LatestResultSink, path: Path) -> None:
        super().__init__("gui-picture")
        self.config, self.sink, self.path = config, sink, path
        self.analysis: FileAnalysis | None = None
        self._stopping = threading.Event()  # not _stop: Thread has a method of that name
        self._pipeline: Pipeline | None = None  # the run going on (a still is scored after a first run)

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    def _work(self) -> None:
        self.analysis = analyse_file(self.path, self.config, sinks=[self.sink], on_pipeline=self._follow)

    def _follow(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        if self._stopping.is_set():  # Stop came between two runs
            pipeline.stop()

    def stop(self, timeout: float = 30.0) -> bool:
        """End the scoring (a long animation) and wait for this thread; True if it ended."""
        self._stopping.set()
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.stop()
        self.join(timeout)
        return not self.is_alive()
