"""The live view's H.264 video (``/stream.mp4``): real libx264 encoding into fragmented MP4, decoded
back with PyAV, served over real HTTP by the live view's server to viewers who join at any time."""
from __future__ import annotations

import asyncio
import io
import os
import re
import struct
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_guard.outputs.http import server as server_module
from stream_guard.outputs.http.live_mp4 import LiveMp4Encoder, Mp4Fragment, avc_codec_string
from stream_guard.outputs.http.mp4_relay import CLIENT_QUEUE, SOUND_CLIENT_QUEUE, Mp4Relay
from stream_guard.outputs.http.options import ServeOptions
from stream_guard.outputs.http.sink import LiveViewSink
from stream_guard.types import Frame, FrameResult, StreamInfo
from tests.support.alert_frames import PROVENANCE
from tests.support.synth_video import make_clip_with_sound, make_test_clip
from tools.bench_live_view import main as bench_live_view

FPS = 25.0
RED, BLUE = (220, 30, 30), (30, 30, 220)


def picture(width: int, height: int, k: int) -> np.ndarray:
    """Red with a blue bar that moves with ``k`` (so frames differ and motion is encoded)."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = RED
    x = (k * 7) % max(1, width - 16)
    image[:, x:x + 16] = BLUE
    return image


def boxes(data: bytes) -> list[bytes]:
    """The top-level MP4 box types of ``data``, which must be whole boxes."""
    kinds, at = [], 0
    while at < len(data):
        size, kind = struct.unpack_from(">I4s", data, at)
        assert size >= 8 and at + size <= len(data), f"a broken box at {at}"
        kinds.append(kind)
        at += size
    return kinds


def decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))


def test_each_frame_is_a_fragment_and_a_keyframe_starts_a_playable_stream() -> None:
    encoder = LiveMp4Encoder(321, 181, FPS, gop_s=1.0)  # odd sides: 4:2:0 needs even ones
    times = [i / FPS + (0.013 if i % 3 == 0 else 0.0) for i in range(60)]  # frames do not come evenly
    fragments: list[Mp4Fragment] = []
    for k, t in enumerate(times):
        fragments += encoder.encode(picture(321, 181, k), 100.0 + t)
        if k == 0:
            assert encoder.init is not None and boxes(encoder.init) == [b"ftyp", b"moov"]
            assert encoder.codec == avc_codec_string(encoder.init) and encoder.codec.startswith("avc1.")
    fragments += encoder.close()
    assert len(fragments) == 60
    assert all(boxes(f.data) == [b"moof", b"mdat"] for f in fragments)
    keyframes = [i for i, f in enumerate(fragments) if f.keyframe]
    assert keyframes[0] == 0 and max(np.diff(keyframes + [60])) <= 25, keyframes  # at least every second

    frames = decode(encoder.init + b"".join(f.data for f in fragments))
    assert len(frames) == 60 and (frames[0].width, frames[0].height) == (320, 180)
    stamps = [float(f.pts * f.time_base) for f in frames]
    assert stamps == pytest.approx([t - times[0] for t in times], abs=0.002)  # their own times, not a steady rate
    middle = frames[30].to_ndarray(format="rgb24")
    assert np.abs(middle[5, 318].astype(int) - RED).max() < 20  # right edge: the bar is elsewhere
    assert np.abs(middle[5, (30 * 7) % 305 + 8].astype(int) - BLUE).max() < 20

    for start in keyframes[1:]:  # a viewer who joined at a later keyframe
        late = decode(encoder.init + b"".join(f.data for f in fragments[start:]))
        assert len(late) == 60 - start and late[0].key_frame


def test_frames_within_a_millisecond_keep_the_first() -> None:
    encoder = LiveMp4Encoder(64, 64, FPS)
    assert encoder.encode(picture(64, 64, 0), 5.0) == []  # the first fragment closes with the next frame
    assert encoder.encode(picture(64, 64, 1), 5.0004) == []
    assert len(encoder.encode(picture(64, 64, 2), 5.04)) == 1
    assert len(encoder.close()) == 1


def test_relay_gives_a_joining_viewer_the_init_and_everything_since_the_last_keyframe() -> None:
    async def scenario() -> None:
        relay = Mp4Relay()
        assert await relay.join(0.05) is None  # nothing encoded yet: the caller answers 503
        waiting = asyncio.ensure_future(relay.join(5.0))  # a viewer who came first waits for the start
        await asyncio.sleep(0)
        relay.start(b"INIT", "avc1.42e01e")
        relay.add([Mp4Fragment(b"K1", True)])
        relay.add([Mp4Fragment(b"P1", False)])
        first = await waiting
        assert first is not None and first[1] == "avc1.42e01e"
        relay.add([Mp4Fragment(b"K2", True)])
        relay.add([Mp4Fragment(b"P2", False)])
        late = await relay.join(1.0)
        assert late is not None
        assert [late[0].get_nowait() for _ in range(late[0].qsize())] == [b"INIT", b"K2", b"P2"]
        assert [first[0].get_nowait() for _ in range(first[0].qsize())] == [b"INIT", b"K1", b"P1", b"K2", b"P2"]

        for i in range(CLIENT_QUEUE + 10):  # the late viewer stopped reading: it is ended, not waited for
            relay.add([Mp4Fragment(b"P", False)])
            if i < CLIENT_QUEUE:
                first[0].get_nowait()
        assert [late[0].get_nowait() for _ in range(late[0].qsize())] == [None]
        assert first[0].qsize() == 10

        relay.start(b"INIT2", "avc1.640028")  # a new encoding (a new size): old viewers are ended
        assert first[0].get_nowait() is None
        relay.end()
        assert relay.init is None and await relay.join(0.05) is None

    asyncio.run(scenario())


def test_a_relay_of_smaller_fragments_lets_a_viewer_lag_by_more_of_them() -> None:
    async def scenario() -> None:
        relay = Mp4Relay(client_queue=SOUND_CLIENT_QUEUE)
        relay.start(b"INIT", "mp4a.40.2")
        joined = await relay.join(1.0)
        assert joined is not None
        for _ in range(SOUND_CLIENT_QUEUE):  # every sound fragment is a keyframe: the backlog is the newest
            relay.add([Mp4Fragment(b"A", True)])
        assert joined[0].qsize() == 1 + SOUND_CLIENT_QUEUE  # the init, then all of them: not ended yet
        relay.add([Mp4Fragment(b"A", True)])
        assert joined[0].qsize() == 1 and joined[0].get_nowait() is None

    asyncio.run(scenario())


class FedLiveView:
    """An in-process live view (127.0.0.1, no token) fed frames of ``size`` at 25 fps by a thread."""

    def __init__(self, width: int, height: int) -> None:
        self.size = (width, height)
        self.sink = LiveViewSink(ServeOptions(host="127.0.0.1", port=0), PROVENANCE,
                                 announce=open(os.devnull, "w"))
        self.sink.open(StreamInfo("cam", width, height, FPS, None, True))
        self._stop = threading.Event()
        self._feeding = threading.Event()
        self._feeding.set()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sink.port}/stream.mp4"

    def pause(self) -> None:
        self._feeding.clear()

    def _feed(self) -> None:
        k = 0
        while not self._stop.wait(1 / FPS):
            if not self._feeding.is_set():
                continue
            width, height = self.size
            image = picture(width, height, k)
            frame = Frame(pixels=image, index=k, pts_s=k / FPS, wallclock_s=time.monotonic(), source_id="cam")
            self.sink.write(FrameResult(frame=frame, annotated=image, faces=(), detected=False, latency_ms=1.0,
                                        fps=FPS))
            k += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sink.close()
        self.sink._announce.close()


@pytest.fixture
def live_view() -> Iterator[FedLiveView]:
    view = FedLiveView(320, 240)
    yield view
    view.close()


def live_metric(view: FedLiveView, name: str, video: str) -> float:
    """One sample of the live view's ``/metrics``, by its ``video`` label."""
    with urllib.request.urlopen(f"http://127.0.0.1:{view.sink.port}/metrics", timeout=30) as response:
        families = text_string_to_metric_families(response.read().decode())
        return next(sample.value for family in families for sample in family.samples
                    if sample.name == name and sample.labels.get("video") == video)


def read_stream(url: str, seconds: float) -> tuple[str, bytes]:
    """What ``url`` sends in ``seconds`` (or until it ends), and its content type."""
    with urllib.request.urlopen(url, timeout=30) as response:
        kind, data, until = response.headers["Content-Type"], b"", time.monotonic() + seconds
        while time.monotonic() < until:
            chunk = response.read1(65536)
            if not chunk:
                break
            data += chunk
    return kind, data


def test_viewers_joining_at_any_time_get_a_stream_that_decodes(live_view: FedLiveView) -> None:
    kind, first = read_stream(live_view.url, 2.0)
    assert kind.startswith('video/mp4; codecs="avc1.')
    frames = decode(first)
    assert len(frames) >= 20 and (frames[0].width, frames[0].height) == (320, 240)
    assert all(box in (b"ftyp", b"moov", b"moof", b"mdat") for box in boxes(first))

    time.sleep(0.5)  # mid-way between keyframes: the next viewer starts at the last one
    both: dict[str, bytes] = {}
    threads = [threading.Thread(target=lambda n=n: both.__setitem__(n, read_stream(live_view.url, 1.5)[1]))
               for n in ("a", "b")]
    for t in threads:
        t.start()
    time.sleep(0.7)
    assert live_metric(live_view, "stream_guard_live_viewers", "h264") == 2
    for t in threads:
        t.join(30)
    for data in both.values():
        assert len(decode(data)) >= 15
    assert live_metric(live_view, "stream_guard_live_video_bytes_total", "h264") >= \
        len(first) + sum(len(d) for d in both.values())

    deadline = time.monotonic() + 10  # nobody watches: the encoder is stopped
    while live_view.sink._h264 is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_view.sink._h264 is None


def test_a_new_frame_size_ends_the_stream_and_the_next_connection_gets_the_new_size(live_view: FedLiveView) -> None:
    done: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: done.__setitem__("old", read_stream(live_view.url, 20.0)[1]))
    reader.start()
    time.sleep(1.0)
    live_view.size = (480, 270)  # the source changed resolution
    reader.join(30)
    assert not reader.is_alive(), "the old stream did not end"
    old = decode(done["old"])
    assert old and {(f.width, f.height) for f in old} == {(320, 240)}
    new = decode(read_stream(live_view.url, 1.0)[1])
    assert new and (new[0].width, new[0].height) == (480, 270)


def test_no_frames_is_a_503_not_a_hang(live_view: FedLiveView, monkeypatch: pytest.MonkeyPatch) -> None:
    live_view.pause()
    time.sleep(0.2)
    monkeypatch.setattr(server_module, "VIDEO_WAIT_S", 0.5)
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(live_view.url, timeout=30)
    assert error.value.code == 503


def test_bench_live_view_prints_both_videos_costs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", seconds=1.0, width=320, height=240, fps=25)
    bench_live_view([str(clip), "--heights", "120", "240", "--seconds", "1"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:-1]]
    assert [(r[0], r[1]) for r in rows] == [("120", "MJPEG"), ("120", "H.264"), ("240", "MJPEG"), ("240", "H.264")]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
    assert lines[-1] == "sound: the clip has none"


def test_bench_live_view_prints_what_the_sound_adds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_clip_with_sound(tmp_path / "clip.mp4", seconds=2.0, fps=25)
    bench_live_view([str(clip), "--heights", "120", "--seconds", "2"])
    sound = capsys.readouterr().out.splitlines()[-1]
    m = re.fullmatch(r"sound  AAC  ([\d.]+) ms of CPU per second, (\d+) kbit/s", sound)
    assert m, sound
    assert float(m.group(1)) > 0 and 30 < int(m.group(2)) < 400  # a tone as AAC plus a fragment header per packet
