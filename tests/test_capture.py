"""The capture thread: drop policies, end of stream, and reconnecting a live source."""
from __future__ import annotations

import threading
import time
from typing import Iterator

from pathlib import Path

import numpy as np
import pytest

from stream_guard.errors import SourceError, SourceUnreachableError
from stream_guard.sources.base import DropPolicy
from stream_guard.sources.capture import (CaptureThread, EndOfStream, FrameQueue, ReconnectPolicy,
                                          SourceEvent)
from stream_guard.sources import PyAVSource, parse_source
from stream_guard.types import Frame, PendingImage, StreamInfo
from tests.support.synth_video import make_test_clip

FAST = ReconnectPolicy(initial_s=0.01, max_s=0.02, max_attempts=5, jitter=0.0)


def _frame(i: int) -> Frame:
    return Frame(np.zeros((4, 4, 3), np.uint8), i, i / 30, time.monotonic(), "test")


class ScriptedSource:
    """A live source whose connections each yield a scripted number of frames then drop;
    ``fail_opens`` reopen attempts fail before the next connection succeeds."""

    def __init__(self, connections: list[int], fail_opens: int = 0) -> None:
        self.source_id = "scripted"
        self.connections = list(connections)
        self.fail_opens = fail_opens
        self.opens = 0
        self.closed = 0
        self._next = 0

    def open(self) -> StreamInfo:
        self.opens += 1
        if self.opens > 1 and self.fail_opens > 0:
            self.fail_opens -= 1
            raise SourceUnreachableError("refused")
        if not self.connections:
            raise SourceUnreachableError("gone for good")
        self._count = self.connections.pop(0)
        return StreamInfo("scripted", 4, 4, 30.0, None, True)

    def frames(self) -> Iterator[Frame]:
        for _ in range(self._count):
            yield _frame(self._next)
            self._next += 1
        raise SourceError("connection dropped")

    def close(self) -> None:
        self.closed += 1


def _drain(q: FrameQueue) -> list:
    items = []
    while True:
        item = q.get(timeout=5)
        assert item is not None, "capture thread stalled"
        items.append(item)
        if isinstance(item, EndOfStream):
            return items


def test_drop_oldest_keeps_newest_frames_and_counts_drops() -> None:
    q = FrameQueue(2, DropPolicy.DROP_OLDEST, threading.Event())
    for i in range(10):
        assert q.put(_frame(i))
    assert q.dropped == 8
    assert [q.get(0.1).index, q.get(0.1).index] == [8, 9]


def test_drop_oldest_never_drops_control_items() -> None:
    q = FrameQueue(2, DropPolicy.DROP_OLDEST, threading.Event())
    q.put(SourceEvent("connected", 0.0))
    for i in range(5):
        q.put(_frame(i))
    items = [q.get(0.1) for _ in range(q.qsize())]
    assert any(isinstance(i, SourceEvent) for i in items)


def test_block_policy_loses_nothing() -> None:
    stop = threading.Event()
    q = FrameQueue(2, DropPolicy.BLOCK, stop)
    source = ScriptedSource([50])
    source.open()
    thread = CaptureThread(source, q, stop, live=False)
    thread.start()
    items = _drain(q)
    thread.join(5)
    frames = [i for i in items if isinstance(i, Frame)]
    assert [f.index for f in frames] == list(range(50))
    assert isinstance(items[-1].error, SourceError)  # a file that fails mid-way reports it, no retry
    assert source.opens == 1


def test_live_source_reconnects_and_reports_each_drop() -> None:
    stop = threading.Event()
    q = FrameQueue(64, DropPolicy.BLOCK, stop)
    source = ScriptedSource([5, 5, 5], fail_opens=2)
    source.open()
    thread = CaptureThread(source, q, stop, live=True, reconnect=FAST)
    thread.start()
    items = _drain(q)
    thread.join(5)
    states = [i.state for i in items if isinstance(i, SourceEvent)]
    assert states[0] == "connected" and states.count("connected") == 3  # first connection, two recoveries
    assert states[-1] == "failed"  # then the source is gone for good: max_attempts, then give up
    assert sum(isinstance(i, Frame) for i in items) == 15


def test_stop_event_ends_reconnect_loop_promptly() -> None:
    stop = threading.Event()
    q = FrameQueue(8, DropPolicy.BLOCK, stop)
    source = ScriptedSource([1])
    source.open()
    slow = ReconnectPolicy(initial_s=30, max_s=30, jitter=0.0)
    thread = CaptureThread(source, q, stop, live=True, reconnect=slow)
    thread.start()
    while True:  # wait until it is in its back-off
        item = q.get(5)
        if isinstance(item, SourceEvent) and item.state == "reconnecting":
            break
    t0 = time.monotonic()
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("attempt,expected", [(1, 0.25), (2, 0.5), (3, 1.0), (4, 1.0), (10, 1.0), (5000, 1.0)])
def test_backoff_is_exponential_and_bounded(attempt: int, expected: float) -> None:
    import random

    assert ReconnectPolicy(jitter=0.0).delay(attempt, random.Random(0)) == pytest.approx(expected)


def test_jittered_backoff_never_exceeds_its_cap() -> None:
    import random

    policy = ReconnectPolicy(initial_s=0.25, max_s=1.0, jitter=0.5)
    rng = random.Random(1)
    delays = [policy.delay(a, rng) for a in range(1, 200) for _ in range(5)]
    assert max(delays) <= 1.0 and min(delays) > 0
    assert len({round(d, 6) for d in delays[:10]}) > 1  # jittered, not a fixed schedule


def test_drop_oldest_keeps_control_items_in_order() -> None:
    q = FrameQueue(3, DropPolicy.DROP_OLDEST, threading.Event())
    q.put(SourceEvent("reconnecting", 0.0))
    for i in range(5):
        q.put(_frame(i))
    items = [q.get(0.1) for _ in range(q.qsize())]
    assert isinstance(items[0], SourceEvent)  # never moved behind frames that came after it
    assert [f.index for f in items[1:]] == [3, 4] and q.dropped == 3


class _Recorded:
    """Wraps a source and keeps every frame it yields."""

    def __init__(self, inner: PyAVSource) -> None:
        self.inner, self.source_id, self.yielded = inner, inner.source_id, []

    def open(self) -> StreamInfo:
        return self.inner.open()

    def frames(self) -> Iterator[Frame]:
        for frame in self.inner.frames():
            self.yielded.append(frame)
            yield frame

    def close(self) -> None:
        self.inner.close()


def _pending(frame: Frame) -> PendingImage:
    assert isinstance(frame.pixels, PendingImage)
    return frame.pixels


@pytest.mark.parametrize("policy", [DropPolicy.DROP_OLDEST, DropPolicy.BLOCK])
def test_a_live_queue_converts_only_the_frames_taken_from_it(tmp_path: Path, policy: DropPolicy) -> None:
    """Pictures wait unconverted in a drop-oldest queue, so those it drops cost no conversion (tone
    mapping an HDR frame costs several times its decoding) and the reader keeps up with the stream.
    With a blocking queue every frame is analysed: the capture thread converts each before queueing it."""
    clip = make_test_clip(tmp_path / "c.mp4", seconds=2.0, width=96, height=64, fps=30)
    source = _Recorded(PyAVSource(parse_source(str(clip))))
    source.open()
    stop = threading.Event()
    q = FrameQueue(2, policy, stop)
    thread = CaptureThread(source, q, stop, live=False)
    thread.start()
    taken, converted_when_taken = [], []
    while not isinstance(item := q.get(timeout=5), EndOfStream):
        assert item is not None, "capture thread stalled"
        if isinstance(item, Frame):
            converted_when_taken.append(_pending(item).converted)
            assert item.image.shape == (item.height, item.width, 3) == (64, 96, 3)
            taken.append(item.index)
            time.sleep(0.02)  # a consumer slower than the reader
    thread.join(5)
    assert len(source.yielded) == 60
    if policy is DropPolicy.BLOCK:
        assert taken == list(range(60)) and all(converted_when_taken)
        return
    dropped = [f for f in source.yielded if f.index not in taken]
    assert q.dropped == len(dropped) > 20
    # none converted but the first frame, which is as the source opens (it may be dropped too)
    assert not any(converted for index, converted in zip(taken, converted_when_taken) if index > 0)
    assert not any(_pending(f).converted for f in dropped if f.index > 0)
