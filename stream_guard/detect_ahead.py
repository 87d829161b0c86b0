"""The detection stage: runs the face detector on its own thread, one frame ahead of the analysis.

Detection needs no state from earlier frames, so it can overlap the tracking, scoring and
drawing of the previous frame: a file scan keeps both CPU cores busy instead of one.

From a live source, frames off the detector's schedule are searched too while no face is
tracked, so a face that appears is found at once; that reads the tracker as it is, a frame or
two behind, and so depends on timing. From a file (``schedule_only``) only the scheduled frames
are searched, so a file gives the same detections, and the same scores, on every run. (Deciding
an unscheduled frame as of the frame before instead means waiting for the analysis to have
tracked it: a quarter slower on 1080p files, measured. A face that appears in a file is found
at most ``detect_interval - 1`` frames later.)

What travels on: every capture item in order, each :class:`Frame` wrapped in a
:class:`DetectedFrame` (its detections, or None when the schedule skipped it), and last of
all one :class:`AheadDone`.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

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


class DetectionSchedule(Protocol):
    """Which frames the detector runs on (the analysis stage: :class:`~stream_guard.analysis.Analyzer`)."""

    def on_schedule(self, frame: Frame) -> bool: ...

    def tracking(self) -> bool: ...


class DetectAheadThread(threading.Thread):
    """Reads the capture queue, detects faces on the frames ``schedule`` picks (its scheduled
    frames, and unless ``schedule_only`` the others while no face is tracked) and queues everything
    for the analysis thread.

    After ``stop`` it still passes on the frames the capture thread already queued (a
    stopped file run loses none), waiting at most ``grace_s`` for a capture thread stuck in
    a read. ``closed`` (set by the consumer when it quits) unblocks a full ``out`` queue.
    """

    def __init__(self, detector: FaceDetector, schedule: DetectionSchedule, inbox: FrameQueue,
                 capture: threading.Thread, stop: threading.Event, out_size: int, grace_s: float,
                 schedule_only: bool = False) -> None:
        super().__init__(name="detect", daemon=True)
        self.detector = detector
        self.schedule = schedule
        self.schedule_only = schedule_only
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
                item.convert()  # a live frame's picture is converted once it is taken (PendingImage)
                item = self._detect(item)
            if not self.out.put(item) or isinstance(item, EndOfStream):
                return

    def _detect(self, frame: Frame) -> DetectedFrame:
        if not (self.schedule.on_schedule(frame) or (not self.schedule_only and not self.schedule.tracking())):
            return DetectedFrame(frame, None)
        t0 = time.perf_counter()
        detections = self.detector.detect(frame.image)
        return DetectedFrame(frame, detections, (time.perf_counter() - t0) * 1e3)
