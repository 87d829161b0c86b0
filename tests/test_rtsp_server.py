"""The test RTSP server, read through PyAV's (FFmpeg's) real RTSP client."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import av
import pytest

from tests.support.rtsp_fixture import RtspServerProcess
from tests.support.synth_video import make_test_clip, read_frame_index

FPS = 30
CLIP_FRAMES = 60  # a 2 s clip: reading 90 frames crosses the loop point
TIMEOUT = (10.0, 5.0)  # PyAV (open, read) timeouts: no test can hang on the network


@dataclass
class Received:
    """What a client saw of one decoded frame."""

    arrival: float
    index: int
    pts: Optional[int]
    width: int
    height: int


def read_frames(url: str, count: int, transport: str = "tcp", options: Optional[Dict[str, str]] = None) -> List[Received]:
    """Open ``url`` and decode ``count`` frames, noting arrival time and stamped index."""
    frames: List[Received] = []
    with av.open(url, options={"rtsp_transport": transport, **(options or {})}, timeout=TIMEOUT) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            frames.append(Received(time.monotonic(), read_frame_index(rgb), frame.pts, frame.width, frame.height))
            if len(frames) >= count:
                break
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rtsp") / "pattern.mp4"
    return make_test_clip(path, seconds=CLIP_FRAMES / FPS, width=640, height=360, fps=FPS)


@pytest.fixture
def server(clip: Path):
    with RtspServerProcess(clip) as srv:
        yield srv


def test_make_test_clip_is_live_friendly(clip: Path) -> None:
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        assert (stream.codec_context.width, stream.codec_context.height) == (640, 360)
        assert [i for i, p in enumerate(packets) if p.is_keyframe] == [0, 30]
        assert all(p.pts == p.dts for p in packets), "B-frames present"
    with av.open(str(clip)) as container:
        indices = [read_frame_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert indices == list(range(CLIP_FRAMES))


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_stream_round_trip_in_real_time_across_loop(server: RtspServerProcess, transport: str) -> None:
    start = time.monotonic()
    frames = read_frames(server.url, 90, transport)
    assert all((f.width, f.height) == (640, 360) for f in frames)
    assert [f.index for f in frames] == [i % CLIP_FRAMES for i in range(90)], "dropped or reordered frames"
    pts = [f.pts for f in frames if f.pts is not None]  # FFmpeg leaves the first RTSP frame's pts unset
    assert len(pts) >= 89 and all(b > a for a, b in zip(pts, pts[1:])), "timestamps must grow across the loop"
    # 90 frames are 3 s of video: not faster than real time, not much slower either.
    assert 2.4 < frames[-1].arrival - start < 10.0
    paced = frames[-1].arrival - frames[30].arrival  # past FFmpeg's probe buffer: 59 frame periods
    assert 1.3 < paced < 4.0


def test_two_clients_at_once(server: RtspServerProcess) -> None:
    results: Dict[int, List[Received]] = {}

    def client(n: int) -> None:
        results[n] = read_frames(server.url, 30, "tcp")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [0, 1]
    for frames in results.values():
        assert [f.index for f in frames] == list(range(30))


def test_live_mode_joins_shared_timeline(clip: Path) -> None:
    with RtspServerProcess(clip, live=True) as srv:
        frames = read_frames(srv.url, 30, "tcp")
    first = frames[0].index
    assert [f.index for f in frames] == [(first + i) % CLIP_FRAMES for i in range(30)]


@pytest.mark.parametrize("scheme", ["any", "basic", "digest"])
def test_auth_required(clip: Path, scheme: str) -> None:
    with RtspServerProcess(clip, auth="viewer:s3cret", auth_scheme=scheme) as srv:
        with pytest.raises(av.error.HTTPUnauthorizedError):
            av.open(srv.url, options={"rtsp_transport": "tcp"}, timeout=TIMEOUT)
        with pytest.raises(av.error.HTTPUnauthorizedError):
            av.open(srv.url_with_credentials(password="wrong"), options={"rtsp_transport": "tcp"}, timeout=TIMEOUT)
        frames = read_frames(srv.url_with_credentials(), 5)
    assert [f.index for f in frames] == list(range(5))


@pytest.mark.parametrize(
    "refuse, error",
    [(503, av.error.HTTPServerError), (403, av.error.HTTPForbiddenError), ("close", av.error.FFmpegError)],
)
def test_refusing_server_fails_fast(clip: Path, refuse: object, error: type) -> None:
    with RtspServerProcess(clip, refuse=refuse) as srv:
        start = time.monotonic()
        with pytest.raises(error):
            av.open(srv.url, options={"rtsp_transport": "tcp"}, timeout=TIMEOUT)
        assert time.monotonic() - start < 5.0


def test_unknown_path_is_not_found(server: RtspServerProcess) -> None:
    with pytest.raises(av.error.HTTPNotFoundError):
        av.open(server.url.replace("/live", "/nope"), options={"rtsp_transport": "tcp"}, timeout=TIMEOUT)


def test_stop_and_restart_on_same_port(clip: Path) -> None:
    with RtspServerProcess(clip) as srv:
        url, port = srv.url, srv.port
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=TIMEOUT) as container:
            frames = container.decode(video=0)
            next(frames)
            assert srv.stop() == 0  # SIGTERM with a client streaming: clean exit
            with pytest.raises((av.error.FFmpegError, StopIteration)):
                for _ in range(100):  # the stream ends (EOF or error), it does not hang
                    next(frames)
        with pytest.raises((av.error.FFmpegError, OSError)):
            av.open(url, options={"rtsp_transport": "tcp"}, timeout=TIMEOUT)
        srv.start()
        assert (srv.url, srv.port) == (url, port)
        assert [f.index for f in read_frames(url, 5)] == list(range(5))
        srv.kill()
        srv.start()
        assert srv.port == port
        assert len(read_frames(url, 5)) == 5
