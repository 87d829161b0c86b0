"""HTTP sources: an HLS playlist served on 127.0.0.1, read through the pipeline."""
from __future__ import annotations

import contextlib
import json
import functools
import http.server
import threading
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
import pytest

from stream_guard.config import ModelOptions, RunConfig, SourceOptions
from stream_guard.errors import SourceError
from stream_guard.pipeline import Pipeline
from stream_guard.sources import PyAVSource, parse_source
from tests.conftest import run_cli
from tests.support.synth_video import make_clip_with_sound, make_test_clip, remux


def _write_hls(clip: Path, folder: Path) -> Path:
    """Re-mux a clip (H.264, and its sound if any) into an HLS playlist with 1 s segments (real FFmpeg hls muxer)."""
    folder.mkdir(parents=True, exist_ok=True)
    playlist = folder / "index.m3u8"
    remux(clip, playlist, "hls", {"hls_time": "1", "hls_list_size": "0"})
    return playlist


@contextlib.contextmanager
def _serving(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering with ``handler``, on a thread of its own: its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def _served(folder: Path, requests: list[str] | None = None) -> Iterator[str]:
    """``folder`` over HTTP on 127.0.0.1: the base URL; each requested path is appended to ``requests``."""
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            if requests is not None:
                requests.append(self.path)

    with _serving(functools.partial(Handler, directory=str(folder))) as base:
        yield base


@pytest.fixture
def hls_url(two_faces_clip: Path, tmp_path: Path) -> Iterator[str]:
    _write_hls(two_faces_clip, tmp_path)
    with _served(tmp_path) as base:
        yield f"{base}/index.m3u8"


def test_hls_stream_is_read_and_analysed(hls_url: str, placeholder_model: Path) -> None:
    config = RunConfig(source=SourceOptions(hls_url, max_frames=60), model=ModelOptions(model_dir=placeholder_model))
    seen: set[int] = set()
    summary = Pipeline(config, on_result=lambda r: seen.update(f.track_id for f in r.faces)).run()
    assert summary.frames_read == 60 and summary.error is None
    # a finished playlist is a recording: read as a file, nothing dropped, so both faces keep their ids
    assert summary.frames_processed == 60 and summary.frames_dropped == 0
    assert seen == {1, 2}


def test_a_recording_over_http_is_read_once_to_its_end(hls_url: str, two_faces_clip: Path, placeholder_model: Path,
                                                        tmp_path: Path) -> None:
    """A finished HLS playlist or an MP4 over HTTP has an end: the run ends there, having analysed and
    recorded every frame (with the sound), where it used to take the end for a dropped stream and
    replay the recording for ever, dropping the frames it could not keep up with."""
    events = tmp_path / "hls.jsonl"
    result = run_cli("watch", hls_url, "--events", str(events), "--model", str(placeholder_model), timeout=60)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    summary = records[-1]
    assert (summary["frames_read"], summary["frames_processed"], summary["frames_dropped"]) == (90, 90, 0)
    assert records[0]["live"] is False and not [r for r in records if r["type"] == "source"]

    (tmp_path / "site").mkdir()
    clip = make_clip_with_sound(tmp_path / "site" / "clip.mp4", seconds=2.0, fps=25)
    remux(clip, tmp_path / "site" / "fast.mp4", "mp4", {"movflags": "faststart"})  # playable while it downloads
    with _served(tmp_path / "site") as base:
        result = run_cli("watch", f"{base}/fast.mp4", "--out", str(tmp_path / "out.mp4"), "--model",
                         str(placeholder_model), timeout=60)
    assert result.returncode == 0, result.stderr
    with av.open(str(tmp_path / "out.mp4")) as out:
        assert [(s.type, s.frames > 0) for s in out.streams] == [("video", True), ("audio", True)]
        assert out.streams.video[0].frames == 50


def test_a_recording_over_http_plays_in_real_time_when_asked(hls_url: str, placeholder_model: Path,
                                                               tmp_path: Path) -> None:
    """``--realtime`` (and the desktop app's "real-time" box) paces a recording served over HTTP as it
    paces a file: 45 frames at 30 fps take 1.5 s, where read as fast as it downloads they took a fraction."""
    events = tmp_path / "ev.jsonl"
    result = run_cli("watch", hls_url, "--realtime", "--max-frames", "45", "--events", str(events), "--model",
                     str(placeholder_model), timeout=60)
    assert result.returncode == 0, result.stderr
    summary = json.loads(events.read_text().splitlines()[-1])
    assert summary["frames_processed"] == 45 and summary["duration_s"] >= 1.4, summary


def _opens_live(url: str) -> bool:
    """Whether the source at ``url`` opens as a live stream (not a recording read as a file is)."""
    source = PyAVSource(parse_source(url))
    try:
        return source.open().is_live
    finally:
        source.close()


def test_a_live_playlist_stays_live(two_faces_clip: Path, tmp_path: Path) -> None:
    """Without #EXT-X-ENDLIST a playlist is still being written: a live stream, whatever it holds so far."""
    playlist = _write_hls(two_faces_clip, tmp_path)
    playlist.write_text(playlist.read_text().replace("#EXT-X-ENDLIST\n", ""))
    with _served(tmp_path) as base:
        assert _opens_live(f"{base}/index.m3u8")


def _ts_channel(data: bytes, then: Callable[[], object] = lambda: None) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler that sends ``data`` as a live MPEG-TS channel does (no length), then calls ``then``
    (a sender that hangs with the connection open)."""
    class Channel(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            with contextlib.suppress(OSError):
                for start in range(0, len(data), 8192):
                    self.wfile.write(data[start:start + 8192])
                self.wfile.flush()
            then()

    return Channel


def test_an_mpegts_stream_over_http_stays_live(two_faces_clip: Path, tmp_path: Path) -> None:
    """A live MPEG-TS over HTTP (a camera, an IPTV channel) is sent without a length, unlike a file of one."""
    remux(two_faces_clip, tmp_path / "clip.ts", "mpegts", {})
    data = (tmp_path / "clip.ts").read_bytes()

    with _serving(_ts_channel(data)) as base:
        assert _opens_live(f"{base}/channel.ts")


def test_a_live_stream_that_stalls_ends_with_its_last_frame_timed_when_it_came(two_faces_clip: Path,
                                                                              tmp_path: Path) -> None:
    """A live MPEG-TS over HTTP whose sender hangs with the connection open. The demuxer holds the last
    picture until the next one starts it, and gave it up only at the read time-out: that frame was taken
    as received 5 s after the stall, so the outage counted 5 s short and a recording showed it for 5 s."""
    import time

    remux(two_faces_clip, tmp_path / "clip.ts", "mpegts", {})
    data = (tmp_path / "clip.ts").read_bytes()
    done = threading.Event()
    sent_at: list[float] = []

    def hang() -> None:
        sent_at.append(time.monotonic())
        done.wait(30)

    with _serving(_ts_channel(data, then=hang)) as base:
        source = PyAVSource(parse_source(f"{base}/channel.ts"))
        try:
            assert source.open().is_live
            frames = []
            with pytest.raises(SourceError, match=r"no data came for 5 s") as failure:
                for frame in source.frames():
                    frames.append(frame)
            failed_at = time.monotonic()
        finally:
            done.set()
            source.close()
    assert len(frames) >= 85, len(frames)  # all but the pictures the decoder still held
    assert frames[-1].wallclock_s - sent_at[0] < 1.0, (frames[-1].wallclock_s - sent_at[0], failure.value)
    assert 4.5 < failed_at - sent_at[0] < 6.5, failed_at - sent_at[0]


@pytest.mark.parametrize(("max_megapixels", "expected"), [(9.0, (1280, 720)), (0.5, (640, 360))])
def test_master_playlist_gives_the_largest_variant_within_the_limit(
        tmp_path: Path, max_megapixels: float, expected: tuple[int, int]) -> None:
    """A master playlist lists its smallest variant first; FFmpeg offers a stream per variant.
    The largest one within --max-megapixels is analysed, and only its segments are fetched."""
    for name, (w, h) in {"low": (640, 360), "high": (1280, 720)}.items():
        _write_hls(make_test_clip(tmp_path / f"{name}.mp4", seconds=4.0, width=w, height=h, fps=15), tmp_path / name)
    (tmp_path / "master.m3u8").write_text(
        "#EXTM3U\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=640x360\nlow/index.m3u8\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=1500000,RESOLUTION=1280x720\nhigh/index.m3u8\n")
    requests: list[str] = []
    with _served(tmp_path, requests) as base:
        source = PyAVSource(parse_source(f"{base}/master.m3u8"), max_megapixels=max_megapixels)
        info = source.open()
        try:
            frames = [f.image.shape for f in source.frames()]
        finally:
            source.close()
    assert (info.width, info.height) == expected
    assert len(frames) == 60 and set(frames) == {(expected[1], expected[0], 3)}
    other = "low" if expected[0] == 1280 else "high"
    # probing reads each variant's first segment; the rest come only from the variant analysed
    assert len([r for r in requests if r.startswith(f"/{other}/") and r.endswith(".ts")]) <= 1, requests


def _tone_hz(chunks: list) -> float:
    """The strongest frequency in the first second of the left channel."""
    samples = np.concatenate([c.samples[0] for c in chunks])[:48000]
    return float(np.argmax(np.abs(np.fft.rfft(samples)))) * 48000 / len(samples)


@pytest.mark.parametrize(("max_megapixels", "expected_hz"), [(9.0, 1500.0), (0.5, 440.0)])
def test_sound_comes_from_the_variant_analysed(tmp_path: Path, max_megapixels: float, expected_hz: float) -> None:
    """Each variant carries its own sound (here a different tone); the sound heard is the one
    of the pictures analysed, and the other variant is not downloaded for it."""
    for name, (w, h, hz) in {"low": (640, 360, 440.0), "high": (1280, 720, 1500.0)}.items():
        clip = make_clip_with_sound(tmp_path / f"{name}.mp4", seconds=4.0, width=w, height=h, tone_hz=hz)
        _write_hls(clip, tmp_path / name)
    (tmp_path / "master.m3u8").write_text(
        "#EXTM3U\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=640x360\nlow/index.m3u8\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=1500000,RESOLUTION=1280x720\nhigh/index.m3u8\n")
    requests: list[str] = []
    chunks: list = []
    with _served(tmp_path, requests) as base:
        source = PyAVSource(parse_source(f"{base}/master.m3u8"), max_megapixels=max_megapixels, sound=chunks.append)
        info = source.open()
        try:
            frames = sum(1 for _ in source.frames())
        finally:
            source.close()
    assert info.has_sound and frames == 100
    assert abs(_tone_hz(chunks) - expected_hz) < 5
    other = "low" if expected_hz > 1000 else "high"
    assert len([r for r in requests if r.startswith(f"/{other}/") and r.endswith(".ts")]) <= 1, requests


@contextlib.contextmanager
def _mjpeg_camera(fps: float, frames: int) -> Iterator[str]:
    """An MJPEG camera over HTTP on 127.0.0.1 (``multipart/x-mixed-replace``, as IP cameras and
    mjpg-streamer serve it), sending ``frames`` pictures of a face at ``fps``: its URL."""
    import time

    import cv2

    from tests.support.faces import one_face_moving

    draw = one_face_moving(320, 240, face_px=120)
    jpegs = [cv2.imencode(".jpg", cv2.cvtColor(draw(i), cv2.COLOR_RGB2BGR))[1].tobytes() for i in range(frames)]

    class Camera(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for jpeg in jpegs:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                 + jpeg + b"\r\n")
                self.wfile.flush()
                time.sleep(1 / fps)

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Camera) as base:
        yield f"{base}/video.mjpg"


def test_an_mjpeg_camera_is_timed_as_its_frames_arrive() -> None:
    """MJPEG carries no timestamps and FFmpeg counts its frames at 25 fps: a 10 fps camera's
    stream time would run at 0.4x. Live, each frame's time is when it came."""
    with _mjpeg_camera(fps=10, frames=40) as url:
        source = PyAVSource(parse_source(url))
        source.open()
        try:
            times = [frame.pts_s for frame, _ in zip(source.frames(), range(30))]
        finally:
            source.close()
    steps = np.diff(times[5:])  # after the first few, which can come in a burst
    assert 0.08 < float(np.median(steps)) < 0.12, steps  # 0.04 when counted at 25 fps
    assert times[-1] - times[0] > 2.4


@contextlib.contextmanager
def _flaky_site(data: bytes, token: str, stall: bool = False) -> Iterator[tuple[str, list[str]]]:
    """A web server of one recording that supports Range requests, answers only requests carrying
    ``X-Token: token`` (403 otherwise), and cuts its first answer off half-way, as a dropped
    connection does, or with ``stall`` stops sending there with the connection open, as a server or
    network that hangs does. Yields the URL and the Range header of each request it served."""
    import re

    served: list[str] = []
    done = threading.Event()

    class Site(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.headers.get("X-Token") != token:
                self.send_error(403)
                return
            start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range", "bytes=0-")).group(1))
            served.append(f"bytes={start}-")
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if len(served) == 1:
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                if stall:
                    done.wait(60)
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Site) as base:
        try:
            yield f"{base}/clip.mp4", served
        finally:
            done.set()


@pytest.mark.parametrize("stall", [False, True], ids=["dropped", "stalled"])
def test_a_recording_over_http_resumes_where_its_connection_dropped(stall: bool, tmp_path: Path,
                                                                    placeholder_model: Path) -> None:
    """The connection drops half-way: FFmpeg asks for the rest (Range) and the recording has every
    frame, where the run used to fail there. The sound, read over a connection of its own, carries
    the same --input-option headers (it was refused without them: a silent recording). A connection that
    stalls is resumed too: it failed the run after 5 s ("no data came for 5 s")."""
    clip = make_clip_with_sound(tmp_path / "clip.mp4", seconds=2.0, fps=25)
    remux(clip, tmp_path / "fast.mp4", "mp4", {"movflags": "faststart"})
    out = tmp_path / "out.mp4"
    with _flaky_site((tmp_path / "fast.mp4").read_bytes(), token="s3cret", stall=stall) as (url, served):
        result = run_cli("watch", url, "--out", str(out), "--input-option", "headers=X-Token: s3cret\r\n",
                         "--model", str(placeholder_model), timeout=60)
    assert result.returncode == 0, result.stderr
    assert any(r != "bytes=0-" for r in served), served  # the rest, asked for where it broke off
    with av.open(str(out)) as recording:
        assert recording.streams.video[0].frames == 50
        assert recording.streams.audio and recording.streams.audio[0].frames > 0


def test_a_web_page_url_is_named_as_such(tmp_path: Path) -> None:
    """A video site's page pasted instead of its video: say so, not that the server failed."""
    (tmp_path / "watch.html").write_text("<!doctype html><html><body><video src='clip.mp4'></video></body></html>")
    with _served(tmp_path) as base:
        result = run_cli("watch", f"{base}/watch.html", timeout=60)
    assert result.returncode == 3 and len(result.stderr_lines) == 1, result.stderr
    assert "watch.html: is a web page, not a video: give the address of the video itself" in result.stderr


def test_an_empty_file_over_http_is_named_as_such(tmp_path: Path) -> None:
    """A 0-byte file at a URL (an upload that failed): it said the server closed the connection."""
    (tmp_path / "clip.mp4").write_bytes(b"")
    with _served(tmp_path) as base:
        result = run_cli("watch", f"{base}/clip.mp4", timeout=60)
    assert result.returncode == 3 and len(result.stderr_lines) == 1, result.stderr
    assert "clip.mp4: the server sent an empty file (0 bytes)" in result.stderr


def test_a_live_playlist_that_finishes_ends_the_run(two_faces_clip: Path, placeholder_model: Path,
                                                      tmp_path: Path) -> None:
    """A live event whose playlist gets its #EXT-X-ENDLIST: FFmpeg reads to the end, the run
    reconnects as for any live drop, finds a finished recording, and ends (exit 0). Before, the
    reconnect read the finished recording from its start, and again at each end, for ever."""
    import subprocess
    import sys
    import time

    playlist = _write_hls(two_faces_clip, tmp_path)
    finished = playlist.read_text()
    playlist.write_text(finished.replace("#EXT-X-ENDLIST\n", ""))
    events = tmp_path / "ev.jsonl"
    with _served(tmp_path) as base:
        run = subprocess.Popen([sys.executable, "-m", "stream_guard", "watch", f"{base}/index.m3u8", "--events",
                                str(events), "--model", str(placeholder_model)], stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(2.0)
            playlist.write_text(finished)  # the event is over
            _, stderr = run.communicate(timeout=45)
        finally:
            run.kill()
    assert run.returncode == 0, stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert records[0]["live"] is True and records[-1]["type"] == "summary"
    assert records[-1]["frames_read"] <= 90 + 30, records[-1]  # read once (and a reload's worth), not replayed


def test_scan_judges_recordings_and_pictures_at_urls(two_faces_clip: Path, placeholder_model: Path,
                                                     tmp_path: Path) -> None:
    """``scan URL``: a recording over HTTP is scored as its file is (every frame: the same score), a
    picture or a GIF at a URL as a still, and a live stream, which would never end, is refused."""
    import cv2

    from tests.support.faces import astronaut_head

    site = tmp_path / "site"
    _write_hls(two_faces_clip, site / "live")
    playlist = site / "live" / "index.m3u8"
    playlist.write_text(playlist.read_text().replace("#EXT-X-ENDLIST\n", ""))
    remux(two_faces_clip, site / "clip.mp4", "mp4", {"movflags": "faststart"})
    remux(two_faces_clip, site / "clip.ts", "mpegts", {})  # no length up front, and this server has no Range
    cv2.imwrite(str(site / "face.png"), cv2.cvtColor(astronaut_head(), cv2.COLOR_RGB2BGR))
    report = tmp_path / "rep"
    with _served(site) as base:
        result = run_cli("scan", f"{base}/clip.mp4", f"{base}/face.png", f"{base}/live/index.m3u8",
                         str(site / "clip.mp4"), f"{base}/clip.ts", "--report", str(report),
                         "--model", str(placeholder_model), "--threshold", "1", timeout=300)
    assert result.returncode == 3, result.stderr  # no fake found, but the live stream was not checked
    files = json.loads((report / "report.json").read_text())["files"]
    assert [f["name"] for f in files] == [f"{base}/clip.mp4", f"{base}/face.png", f"{base}/live/index.m3u8",
                                          "clip.mp4", f"{base}/clip.ts"]
    over_http, picture, live, local, ts_over_http = files
    assert over_http["verdict"] == "real" and over_http["frames"] == local["frames"] == 90
    assert over_http["score"] == pytest.approx(local["score"], abs=1e-6)
    assert ts_over_http["verdict"] == "real" and ts_over_http["frames"] == 90
    assert ts_over_http["score"] == pytest.approx(local["score"], abs=1e-6)
    assert picture["verdict"] == "real" and len(picture["tracks"]) == 1
    assert live["verdict"] == "error" and "is a live stream, not a recording" in live["error"]
    assert "Traceback" not in result.stderr


def test_evaluate_reads_manifest_rows_that_are_urls(two_faces_clip: Path, placeholder_model: Path,
                                                   tmp_path: Path) -> None:
    """Labelled clips kept on a web server: a row's URL was taken as a file name beside the manifest."""
    site = tmp_path / "site"
    site.mkdir()
    remux(two_faces_clip, site / "dfl_served_R.mp4", "mp4", {"movflags": "faststart"})
    local = tmp_path / "dfl_local_L.mp4"
    remux(two_faces_clip, local, "mp4", {"movflags": "faststart"})
    manifest, report = tmp_path / "manifest.tsv", tmp_path / "report.json"
    with _served(site) as base:
        served = base.replace("http://", "http://user:secret@") + "/dfl_served_R.mp4"
        manifest.write_text(f"file\tlabel\n{served}\tfake\n{local.name}\treal\n")
        result = run_cli("evaluate", "--manifest", str(manifest), "--model", str(placeholder_model), "--json",
                         str(report),
                         timeout=300)
    assert result.returncode == 0, result.stderr
    files = {f["file"]: f for f in json.loads(report.read_text())["files"]}
    url = base.replace("http://", "http://***@") + "/dfl_served_R.mp4"  # no credentials in the report
    assert sorted(files) == sorted([url, str(local)]), files
    assert files[url]["family"] == files[str(local)]["family"] == "dfl"
    assert files[url]["frames"] == files[str(local)]["frames"] == 90
    assert files[url]["score"] == pytest.approx(files[str(local)]["score"], abs=1e-6)
    assert "secret" not in result.stderr + report.read_text()


def test_an_mp4_that_needs_ranges_from_a_server_without_them_is_named(tmp_path: Path) -> None:
    """An MP4 with its index at the end must be read out of order; a server that ignores Range requests
    (``python -m http.server``) cannot serve it so. Say that, not "cannot connect"."""
    make_test_clip(tmp_path / "clip.mp4", seconds=2.0)  # its index written last, as FFmpeg does by default
    with _served(tmp_path) as base:
        result = run_cli("watch", f"{base}/clip.mp4", timeout=60)
    assert result.returncode == 3 and len(result.stderr_lines) == 1, result.stderr
    assert "clip.mp4: the server cannot send part of a file (it ignores HTTP Range requests)" in result.stderr
