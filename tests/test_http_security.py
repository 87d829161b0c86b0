"""``--serve`` security: loopback by default, a token for anything else, every request checked,
static files only from the package's own folder, no secret (token, URL password) ever shown."""
from __future__ import annotations

import http.client
import json
import os
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from stream_guard.outputs.http.options import ServeOptions
from stream_guard.outputs.http.sink import LiveViewSink
from stream_guard.types import Frame, FrameResult, FaceResult, StreamInfo, TrackState, Verdict
from tests.conftest import run_cli
from tests.support.alert_frames import PROVENANCE
from tests.support.faces import two_faces_passing
from tests.support.synth_video import make_test_clip
from tests.test_http_live_view import LiveRun, get

TOKEN = "s3cr3t-T0ken_for-tests-7f4c2a"
ROUTES = ["/", "/overlay", "/static/dashboard.js", "/static/overlay.js", "/api/status", "/api/tracks", "/metrics",
          "/healthz", "/nonexistent"]
TRAVERSALS = ["/static/../../etc/passwd", "/static/..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/etc/passwd",
              "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/static/..%5c..%5cetc%5cpasswd",
              "/static/%252e%252e%252fetc%252fpasswd", "/static/....//....//etc/passwd", "/static//etc/passwd",
              "/static/%2fetc%2fpasswd", "/../../etc/passwd", "/static/../server.py", "/static/..%2fserver.py",
              "/static/..%2f__init__.py", "/static/", "/static/.", "/static/..", "/static/%00index.html",
              "/static/index.html%00.js", "/static/../options.py?x=1"]


def raw_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET with the path sent exactly as written (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def env_without_token() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("STREAM_GUARD_TOKEN", None)
    return env


@pytest.fixture
def no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAM_GUARD_TOKEN", raising=False)


@pytest.mark.parametrize("bind", ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080", "example.com:8080"])
def test_non_loopback_bind_without_token_is_refused(bind: str, two_faces_clip: Path, no_token_env: None) -> None:
    result = run_cli("watch", str(two_faces_clip), "--serve", bind)
    assert result.returncode == 2
    assert len(result.stderr_lines) == 1, result.stderr
    assert result.stderr_lines[0].startswith("stream-guard: error: --serve") and "STREAM_GUARD_TOKEN" in result.stderr


def test_token_file_problems_are_one_line_errors(two_faces_clip: Path, tmp_path: Path, no_token_env: None) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    for args in (["--serve", "0.0.0.0:0", "--serve-token-file", str(tmp_path / "missing")],
                 ["--serve", "0.0.0.0:0", "--serve-token-file", str(empty)],
                 ["--serve-token-file", str(empty)]):
        result = run_cli("watch", str(two_faces_clip), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr_lines) == 1 and result.stderr_lines[0].startswith("stream-guard: error:")


def test_token_guards_every_request_and_is_never_shown(placeholder_model: Path, tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", seconds=40.0, width=640, height=360, fps=10,
                          draw=two_faces_passing(n_frames=400))
    token_file = tmp_path / "token.txt"
    token_file.write_text(TOKEN + "\n")
    with LiveRun("-vv", "watch", str(clip), "--realtime", "--model", str(placeholder_model),
                 "--serve", "0.0.0.0:0", "--serve-token-file", str(token_file), env=env_without_token()) as run:
        base = run.wait_for_url()
        port = run.port
        assert port is not None
        seen = b""
        for route in ROUTES:
            assert get(base + route)[0] == 401, route
            status, body, headers = get(base + route, {"Authorization": "Bearer wrong-token"})
            assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer"), route
            assert get(base + route + "?token=wrong-token")[0] == 401, route
            assert get(base + route + "?token=")[0] == 401, route
            assert get(base + route, {"Authorization": f"Basic {TOKEN}"})[0] == 401, route
            assert get(base + route, {"Authorization": f"Bearer {TOKEN}x"})[0] == 401, route
            status, body, _ = get(base + route, {"Authorization": f"Bearer {TOKEN}"})
            assert status == (404 if route == "/nonexistent" else 200), route
            seen += body
        for route in ("/", "/overlay", "/api/status"):  # pages a browser or OBS opens by URL
            status, body, _ = get(f"{base}{route}?token={TOKEN}")
            assert status == 200, route
            seen += body
        for stream in ("/events", "/stream.mjpg", "/stream.mp4"):
            assert get(base + stream, timeout=10)[0] == 401
            req = urllib.request.Request(f"{base}{stream}?token={TOKEN}")
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200
                seen += r.read(4096 if stream == "/events" else 10)
        assert get(base + "/sound.mp4")[0] == 401  # without the token, not even whether the run has sound
        for path in TRAVERSALS:
            status, body = raw_get(port, path, {"Authorization": f"Bearer {TOKEN}"})
            assert status == 404, (path, status)
            assert b"root:" not in body and b"import" not in body, path
        assert TOKEN.encode() not in seen
        run.stop()
    assert TOKEN not in run.stderr
    assert "live view at http://0.0.0.0:" in run.stderr and "token required" in run.stderr


class _Sink:
    """An in-process live view on 127.0.0.1 (no token), fed by hand."""

    def __init__(self, source_id: str) -> None:
        self.info = StreamInfo(source_id=source_id, width=320, height=240, fps=25.0, frame_count=None, is_live=True)
        self.sink = LiveViewSink(ServeOptions(host="127.0.0.1", port=0), PROVENANCE,
                                 announce=open(os.devnull, "w"))

    def __enter__(self) -> "_Sink":
        self.sink.open(self.info)
        return self

    def __exit__(self, *exc: object) -> None:
        self.sink.close()
        self.sink._announce.close()


def _result(source_id: str) -> FrameResult:
    frame = Frame(np.zeros((240, 320, 3), np.uint8), 0, 0.0, 0.0, source_id)
    face = FaceResult(track_id=1, state=TrackState.CONFIRMED, box=np.array([10, 20, 60, 80], np.float32),
                      detection_score=0.9, keypoints=np.zeros((6, 2), np.float32), raw_score=0.4, score=0.4,
                      verdict=Verdict.REAL, scored=True, verdict_changed=True, samples=1)
    return FrameResult(frame=frame, annotated=frame.image, faces=(face,), detected=True, latency_ms=3.0, fps=25.0)


def test_static_files_only_from_the_package_folder_without_token() -> None:
    with _Sink("clip.mp4") as s:
        port = s.sink.port
        assert port
        for path in TRAVERSALS:
            status, body = raw_get(port, path)
            assert status == 404, (path, status)
            assert b"root:" not in body and b"import" not in body, path
        assert raw_get(port, "/static/overlay.js")[0] == 200


def test_without_a_token_only_this_machine_is_answered() -> None:
    """DNS rebinding: a web page whose name its owner points at 127.0.0.1 runs in the viewer's browser and asks
    the token-less live view for its video and data under that name: every route answered (200)."""
    with _Sink("clip.mp4") as s:
        port = s.sink.port
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io", "192.168.1.5"):
            for path in ("/", "/api/status", "/metrics", "/stream.mjpg"):
                status, body = raw_get(port, path, {"Host": host})
                assert status == 403 and b"STREAM_GUARD_TOKEN" in body, (host, path, status)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", "dash.localhost",
                     "127.0.0.2"):
            assert raw_get(port, "/api/status", {"Host": host})[0] == 200, host


def test_url_credentials_never_reach_pages_or_api() -> None:
    secret_url = "rtsp://admin:hunter2@cam.local:554/live"
    with _Sink(secret_url) as s:
        base = f"http://127.0.0.1:{s.sink.port}"
        s.sink.write(_result(secret_url))
        s.sink.event({"type": "source", "source": secret_url, "state": "reconnecting", "wall_time": 0.0,
                      "attempt": 1, "detail": f"cannot connect to {secret_url} (refused)", "downtime_s": None})
        bodies = b"".join(get(base + route)[1] for route in ("/api/status", "/api/tracks", "/", "/metrics"))
        got = threading.Event()
        chunks: list[bytes] = []

        def read_events() -> None:
            with urllib.request.urlopen(f"{base}/events", timeout=30) as r:
                while b'"reconnecting"' not in b"".join(chunks):
                    chunks.append(r.read1(65536))
            got.set()

        reader = threading.Thread(target=read_events, daemon=True)
        reader.start()
        assert got.wait(30)
        reader.join(30)
        text = bodies + b"".join(chunks)
        assert b"hunter2" not in text and b"admin" not in text
        assert b"rtsp://***@cam.local:554/live" in text
        assert json.loads(get(base + "/api/status")[1])["source"] == "rtsp://***@cam.local:554/live"
    assert not any(t.name == "http-live-view" for t in threading.enumerate())


@pytest.mark.parametrize("text, host, port", [("8080", "127.0.0.1", 8080), ("localhost:0", "localhost", 0),
                                               ("[::1]:9000", "::1", 9000), ("127.0.0.2:80", "127.0.0.2", 80)])
def test_loopback_binds_need_no_token(text: str, host: str, port: int) -> None:
    from stream_guard.outputs.http.options import serve_options

    opts = serve_options(text, environ={})
    assert (opts.host, opts.port, opts.token) == (host, port, None)


def test_token_sources_and_repr(tmp_path: Path) -> None:
    from stream_guard.errors import ConfigError
    from stream_guard.outputs.http.options import serve_options

    assert serve_options("0.0.0.0:1", environ={"STREAM_GUARD_TOKEN": TOKEN}).token == TOKEN
    token_file = tmp_path / "t"
    token_file.write_text("from-file\nignored\n")
    opts = serve_options("0.0.0.0:1", token_file, environ={"STREAM_GUARD_TOKEN": TOKEN})
    assert opts.token == "from-file" and "from-file" not in repr(opts)  # the file wins; never in reprs
    with pytest.raises(ConfigError):
        serve_options("0.0.0.0:1", environ={"STREAM_GUARD_TOKEN": "  "})
    with pytest.raises(ConfigError):
        serve_options("0.0.0.0:1", environ={"STREAM_GUARD_TOKEN": "two words"})


def test_a_client_that_never_reads_does_not_block_the_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled MJPEG/SSE client (or a hostile one) fills only its own socket: writes go on. Once it has
    taken nothing for the write time-out it is cut off: it stayed counted as a viewer for ever (its encoder
    kept running) and held up the stop by seconds."""
    import dataclasses
    import socket
    import time

    from stream_guard.outputs.http import server

    monkeypatch.setattr(server, "WRITE_TIMEOUT_S", 1.0, raising=False)
    with _Sink("clip.mp4") as s:
        port = s.sink.port
        stalled = []
        for path in ("/stream.mjpg", "/stream.mp4", "/events"):
            c = socket.socket()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
            c.connect(("127.0.0.1", port))
            c.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            stalled.append(c)
        try:
            rng = np.random.default_rng(0)
            noisy = rng.integers(0, 255, (480, 640, 3), np.uint8)  # JPEGs that stay large
            base = _result("clip.mp4")
            for i in range(300):
                frame = dataclasses.replace(base.frame, wallclock_s=time.monotonic())
                s.sink.write(FrameResult(frame=frame, annotated=noisy, faces=base.faces, detected=True,
                                         latency_ms=1.0, fps=25.0, frames_dropped=i))
            status, body, _ = get(f"http://127.0.0.1:{port}/api/status")
            assert status == 200 and json.loads(body)["frames"] == 300 and json.loads(body)["dropped"] == 299
            viewers = 'stream_guard_live_viewers{video="%s"} %s'
            deadline = time.monotonic() + 20
            noise = [rng.integers(0, 255, (480, 640, 3), np.uint8) for _ in range(5)]  # large H.264 frames too
            while time.monotonic() < deadline:  # frames go on coming (the H.264 encoder wants their time to move)
                frame = dataclasses.replace(base.frame, wallclock_s=time.monotonic())
                s.sink.write(FrameResult(frame=frame, annotated=noise[len(noise) - 1], faces=base.faces,
                                         detected=True, latency_ms=1.0, fps=25.0))
                noise.insert(0, noise.pop())
                metrics = get(f"http://127.0.0.1:{port}/metrics")[1].decode()
                if viewers % ("mjpeg", "0.0") in metrics and viewers % ("h264", "0.0") in metrics:
                    break
                time.sleep(0.2)
            assert viewers % ("mjpeg", "0.0") in metrics and viewers % ("h264", "0.0") in metrics, metrics
        finally:
            for c in stalled:
                c.close()
