"""The detection stage: runs the face detector on its own thread, one frame ahead of the analysis.

Detection needs no state from earlier frames, so it can overlap the tracking, scoring and
drawing of the previous frame: a file scan keeps both CPU cores busy instead of one. What
travels on: every capture item in order, each :class:`Frame` wrapped in a
:class:`DetectedFrame` (its detections, or None when the schedule skipped it), and last of
all one :class:`AheadDone`.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from stream_guard.faces.detector import FaceDetector
from stream_guard.sources.base import DropPolicy
from stream_guard.sources.capture import EndOfStream, FrameQueue
from stream_guard.types import FaceDetections, Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DetectedFrame:
    """A frame and the detector's output for it (None: not on the detector's schedule)."""

    frame: Frame
    detections: FaceDetections | None
    detect_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class AheadDone:
    """The detection thread has handed over everything it will; ``error``: it crashed."""

    error: BaseException | None = None


class DetectAheadThread(threading.Thread):
    """Reads the capture queue, detects faces on the frames ``wants_detection`` picks and
    queues everything for the analysis thread.

    After ``stop`` it still passes on the frames the capture thread already queued (a
    stopped file run loses none), waiting at most ``grace_s`` for a capture thread stuck in
    a read. ``closed`` (set by the consumer when it quits) unblocks a full ``out`` queue.
    """

    def __init__(self, detector: FaceDetector, wants_detection: Callable[[Frame], bool], inbox: FrameQueue,
                 capture: threading.Thread, stop: threading.Event, out_size: int, grace_s: float) -> None:
        super().__init__(name="detect", daemon=True)
        self.detector = detector
        self.wants_detection = wants_detection
        self.inbox = inbox
        self.capture = capture
        self.stop = stop
        self.grace_s = grace_s
        self.closed = threading.Event()
        self.out = FrameQueue(out_size, DropPolicy.BLOCK, self.closed)

    def run(self) -> None:
        error: BaseException | None = None
        try:
            self._forward_all()
        except BaseException as e:  # noqa: BLE001 - handed to the analysis thread, which raises it
            log.exception("detection thread crashed")
            error = e
        finally:
            self.out.put(AheadDone(error))

    def _forward_all(self) -> None:
        stopping_since: float | None = None
        while True:
            item = self.inbox.get(timeout=0.1)
            if item is None:
                if self.stop.is_set():
                    if not self.capture.is_alive() and self.inbox.qsize() == 0:
                        return
                    stopping_since = stopping_since or time.monotonic()
                    if time.monotonic() - stopping_since > self.grace_s:
                        return
                continue
            if isinstance(item, Frame):
                item = self._detect(item)
            if not self.out.put(item) or isinstance(item, EndOfStream):
                return

    def _detect(self, frame: Frame) -> DetectedFrame:
        if not self.wants_detection(frame):
            return DetectedFrame(frame, None)
        t0 = time.perf_counter()
        detections = self.detector.detect(frame.image)
        return DetectedFrame(frame, detections, (time.perf_counter() - t0) * 1e3)
