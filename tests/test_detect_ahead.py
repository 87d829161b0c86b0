"""The detection thread between capture and analysis: order, schedule, stop, crash."""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
import pytest

from stream_guard.detect_ahead import AheadDone, DetectAheadThread, DetectedFrame
from stream_guard.faces.detector import FaceDetector
from stream_guard.sources.base import DropPolicy
from stream_guard.sources.capture import EndOfStream, FrameQueue, SourceEvent
from stream_guard.types import Frame


def _frame(index: int) -> Frame:
    return Frame(np.zeros((96, 128, 3), np.uint8), index, index / 30, time.monotonic(), "test")


def _drain(ahead: DetectAheadThread, timeout: float = 10.0) -> list:
    items, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = ahead.out.get(timeout=0.1)
        if item is None:
            continue
        items.append(item)
        if isinstance(item, AheadDone):
            return items
    raise AssertionError(f"no AheadDone within {timeout} s; got {items}")


def _finished_thread() -> threading.Thread:
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    return t


class _Schedule:
    """Scheduled frames as ``scheduled`` says; ``tracked``: whether a face is tracked (if not, a live
    run searches the other frames too)."""

    def __init__(self, scheduled: Callable[[Frame], bool] = lambda f: f.index % 2 == 0, tracked: bool = True) -> None:
        self.scheduled = scheduled
        self.tracked = tracked

    def on_schedule(self, frame: Frame) -> bool:
        return self.scheduled(frame)

    def tracking(self) -> bool:
        return self.tracked


def _start(inbox: FrameQueue, stop: threading.Event, detector=None, schedule=None,
           capture: threading.Thread | None = None, schedule_only: bool = False) -> DetectAheadThread:
    ahead = DetectAheadThread(detector or FaceDetector(), schedule or _Schedule(), inbox,
                              capture or _finished_thread(), stop, out_size=2, grace_s=0.5,
                              schedule_only=schedule_only)
    ahead.start()
    return ahead


def test_items_keep_their_order_and_only_scheduled_frames_are_detected() -> None:
    stop = threading.Event()
    inbox = FrameQueue(16, DropPolicy.BLOCK, stop)
    event = SourceEvent("reconnecting", time.time(), attempt=1)
    for item in (_frame(0), _frame(1), event, _frame(2), _frame(3), EndOfStream()):
        inbox.put(item)
    items = _drain(_start(inbox, stop))
    assert [type(i) for i in items] == [DetectedFrame, DetectedFrame, SourceEvent, DetectedFrame, DetectedFrame,
                                        EndOfStream, AheadDone]
    frames = [i for i in items if isinstance(i, DetectedFrame)]
    assert [f.frame.index for f in frames] == [0, 1, 2, 3]
    # the real detector ran on the even frames (nothing to find in a black frame), not on the odd ones
    assert [f.detections is not None for f in frames] == [True, False, True, False]
    assert all(len(f.detections) == 0 and f.detect_ms > 0 for f in frames if f.detections is not None)
    assert items[-1].error is None


def test_after_a_stop_the_frames_already_queued_still_go_through() -> None:
    stop = threading.Event()
    inbox = FrameQueue(16, DropPolicy.BLOCK, stop)
    for i in range(5):
        inbox.put(_frame(i))
    stop.set()  # the capture thread has ended without an EndOfStream (its put was refused)
    items = _drain(_start(inbox, stop))
    assert [i.frame.index for i in items if isinstance(i, DetectedFrame)] == [0, 1, 2, 3, 4]
    assert isinstance(items[-1], AheadDone)


def test_a_capture_thread_stuck_in_a_read_is_waited_for_only_the_grace_period() -> None:
    stop, stuck = threading.Event(), threading.Event()
    capture = threading.Thread(target=stuck.wait, daemon=True)
    capture.start()
    try:
        inbox = FrameQueue(4, DropPolicy.BLOCK, stop)
        ahead = _start(inbox, stop, capture=capture)
        stop.set()
        t0 = time.monotonic()
        items = _drain(ahead)
        assert isinstance(items[-1], AheadDone)
        assert time.monotonic() - t0 < 5.0
    finally:
        stuck.set()


class _BrokenDetector:
    def detect(self, image: np.ndarray):
        raise RuntimeError("detector exploded")


def test_a_crash_is_handed_to_the_analysis_thread() -> None:
    stop = threading.Event()
    inbox = FrameQueue(4, DropPolicy.BLOCK, stop)
    inbox.put(_frame(0))
    items = _drain(_start(inbox, stop, detector=_BrokenDetector(), schedule=_Schedule(lambda f: True)))
    assert isinstance(items[-1], AheadDone)
    with pytest.raises(RuntimeError, match="exploded"):
        raise items[-1].error


def test_a_consumer_that_quits_unblocks_a_full_queue() -> None:
    stop = threading.Event()
    inbox = FrameQueue(16, DropPolicy.BLOCK, stop)
    for i in range(8):
        inbox.put(_frame(i))
    ahead = _start(inbox, stop, schedule=_Schedule(lambda f: False))
    time.sleep(0.3)  # out (2 items) is full; the thread waits for room
    assert ahead.is_alive()
    ahead.closed.set()
    ahead.join(timeout=5)
    assert not ahead.is_alive()



@pytest.mark.parametrize(("schedule_only", "expected"), [
    (True, [True, False, False, True, False, False, True]),  # a file: the schedule alone, the same every run
    (False, [True] * 7),  # live: every frame while no face is tracked, to find a new face at once
])
def test_frames_off_the_schedule_are_searched_only_live(schedule_only: bool, expected: list[bool]) -> None:
    stop = threading.Event()
    inbox = FrameQueue(16, DropPolicy.BLOCK, stop)
    for i in range(7):
        inbox.put(_frame(i))
    inbox.put(EndOfStream())
    nothing_tracked = _Schedule(lambda f: f.index % 3 == 0, tracked=False)
    items = _drain(_start(inbox, stop, schedule=nothing_tracked, schedule_only=schedule_only))
    assert [i.detections is not None for i in items if isinstance(i, DetectedFrame)] == expected
