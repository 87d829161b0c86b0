"""``--serve``: the real ``stream-guard watch`` serves a dashboard and an OBS overlay that a real
headless Chromium (Debian's ``chromium``, driven by Playwright) renders from the live event stream."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_guard.model.contract import load_model_spec
from stream_guard.model.provenance import model_digest
from tests.conftest import REPO, run_cli
from tests.support.faces import two_faces_passing
from tests.support.synth_video import make_test_clip

URL_LINE = re.compile(r"live view at (http://\S+?):(\d+)/")
START_TIMEOUT_S = 120  # model load and warm-up on a busy 2-core machine
WAIT_MS = 60_000  # what a page may take to show something (generous: no timing is tested)
METRICS = {"stream_guard_fps", "stream_guard_latency_seconds", "stream_guard_faces", "stream_guard_frames",
           "stream_guard_frames_dropped", "stream_guard_verdict_changes", "stream_guard_stage_seconds",
           "stream_guard_source_state", "stream_guard_model_info", "stream_guard_uptime_seconds",
           "stream_guard_alerts", "stream_guard_open_alerts", "stream_guard_live_viewers",
           "stream_guard_live_video_bytes"}


class LiveRun:
    """``python -m stream_guard ARGS`` in the background; ``port`` once the live view URL is printed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "stream_guard", *args], cwd=REPO, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.port: int | None = None
        self._announced = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = URL_LINE.search(line)
            if m and self.port is None:
                self.port = int(m.group(2))
                self._announced.set()
        self._announced.set()  # the process ended (with or without a URL)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_for_url(self) -> str:
        assert self._announced.wait(START_TIMEOUT_S), "no live view URL printed"
        assert self.port is not None, f"the process ended without serving:\n{self.stderr}"
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        """SIGINT (a clean stop, as Ctrl-C), then wait; kill only if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        self._reader.join(10)
        return rc

    def __enter__(self) -> "LiveRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes, dict]:
    """GET ``url``: status, body, headers (HTTP errors included)."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def open_page(browser, url: str, errors: list[str], **options):
    """A new page of ``browser`` at ``url`` whose script errors are added to ``errors``."""
    page = browser.new_page(**options)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return page


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 s of two faces crossing slowly at 10 fps: time enough for a browser to attach (the test
    stops the run itself once it has seen what it needs)."""
    path = tmp_path_factory.mktemp("live") / "two_faces_long.mp4"
    return make_test_clip(path, seconds=40.0, width=640, height=360, fps=10, draw=two_faces_passing(n_frames=400))


def test_dashboard_overlay_api_and_metrics_in_chromium(long_clip: Path, placeholder_model: Path, browser,
                                                       tmp_path: Path) -> None:
    errors: list[str] = []
    with LiveRun("watch", str(long_clip), "--realtime", "--model", str(placeholder_model),
                 "--serve", "127.0.0.1:0") as run:
        base = run.wait_for_url()
        status, body, _ = get(f"{base}/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"

        dash = open_page(browser, f"{base}/", errors, viewport={"width": 1280, "height": 800})
        # live events arrive, a card per face with a drawn chart, the log, and H.264 video playing
        dash.wait_for_function("window.sgStats && window.sgStats.tracks >= 40", timeout=WAIT_MS)  # ~2 s per face
        dash.wait_for_function("document.querySelectorAll('.face-card').length === 2", timeout=WAIT_MS)
        dash.wait_for_function("document.querySelectorAll('#log-body tr').length >= 2", timeout=WAIT_MS)
        dash.wait_for_function("window.sgVideo.mode === 'h264' && "
                               "document.getElementById('live-video').videoWidth === 640 && "
                               "document.getElementById('live-video').getVideoPlaybackQuality().totalVideoFrames > 10",
                               timeout=WAIT_MS)
        played = dash.evaluate("document.getElementById('live-video').currentTime")
        dash.wait_for_function(f"document.getElementById('live-video').currentTime > {played} + 1", timeout=WAIT_MS)
        assert dash.evaluate("window.sgVideo.lag_s") < 1.5  # kept near live
        dash.wait_for_function("document.getElementById('status').textContent.includes('untrained-placeholder')",
                               timeout=WAIT_MS)
        inked = dash.evaluate("""() => Array.from(document.querySelectorAll('.face-card canvas')).map(c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;  // pixels of the score line (#5dade2), not the dashed threshold line (grey)
            for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i + 2] > 150 && d[i] < 150) n++;
            return n; })""")
        assert len(inked) == 2 and all(n > 20 for n in inked), inked
        assert "UNTRAINED" in dash.inner_text("#status")
        assert "model untrained-placeholder 0.0.0" in dash.inner_text("#status")  # which model, which threshold
        assert "threshold 0.500 (default)" in dash.inner_text("#status"), dash.inner_text("#status")
        digest = model_digest(load_model_spec(placeholder_model))
        assert dash.get_attribute("#status span[title^='model_sha256']", "title").startswith(f"model_sha256 {digest}")
        dash.screenshot(path=str(tmp_path / "dashboard.png"))

        # the MJPEG fallback, as a browser without MSE would get it
        mjpeg = open_page(browser, f"{base}/?video=mjpeg", errors)
        mjpeg.wait_for_function("document.getElementById('stream').naturalWidth === 640", timeout=WAIT_MS)
        assert mjpeg.evaluate("window.sgVideo.mode") == "mjpeg"
        mjpeg.close()

        # twice the stream's size
        overlay = open_page(browser, f"{base}/overlay", errors, viewport={"width": 1280, "height": 720})
        overlay.wait_for_function("document.querySelectorAll('.box').length === 2", timeout=WAIT_MS)
        labels = overlay.eval_on_selector_all(".box .label", "els => els.map(e => e.textContent)")
        assert all(re.fullmatch(r"#\d+ (real|fake|uncertain) (\d\.\d\d|--)", t) for t in labels), labels
        placed = overlay.eval_on_selector_all(
            ".box", "els => els.map(e => [e.dataset.box, parseFloat(e.style.left), parseFloat(e.style.width)])")
        for box_text, left, width in placed:
            x1, _, x2, _ = (float(v) for v in box_text.split(","))
            assert left == pytest.approx(2 * x1, abs=1) and width == pytest.approx(2 * (x2 - x1), abs=1)
        shot = tmp_path / "overlay.png"
        overlay.screenshot(path=str(shot), omit_background=True)
        rgba = cv2.imread(str(shot), cv2.IMREAD_UNCHANGED)
        assert rgba.shape[2] == 4 and rgba[5, 5, 3] == 0, "the overlay background is not transparent"
        assert np.count_nonzero(rgba[..., 3]) > 500, "no box drawn"

        status, body, _ = get(f"{base}/api/status")
        s = json.loads(body)
        assert status == 200 and s["width"] == 640 and s["height"] == 360 and s["frames"] > 0
        assert s["model"] == "untrained-placeholder" and s["trained"] is False and s["uptime_s"] > 0
        assert s["model_sha256"] == model_digest(load_model_spec(placeholder_model)) and s["threshold"] == 0.5
        assert {"source", "fps", "latency_ms", "dropped"} <= s.keys()
        tracks = json.loads(get(f"{base}/api/tracks")[1])["tracks"]
        assert tracks and {"track_id", "score", "verdict", "box", "last_seen_stream_s"} <= tracks[0].keys()

        status, body, headers = get(f"{base}/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert METRICS <= families.keys(), sorted(families)
        (info,) = families["stream_guard_model_info"].samples
        assert info.labels["sha256"] == s["model_sha256"] and info.labels["version"] == s["model_version"]
        frames = [s.value for s in families["stream_guard_frames"].samples if s.name == "stream_guard_frames_total"]
        assert frames and frames[0] > 0
        verdicts = {s.labels["verdict"] for s in families["stream_guard_verdict_changes"].samples}
        viewers = {s.labels["video"]: s.value for s in families["stream_guard_live_viewers"].samples}
        assert viewers["h264"] >= 1 and "mjpeg" in viewers  # the dashboard is still open
        sent = {s.labels["video"]: s.value for s in families["stream_guard_live_video_bytes"].samples
                if s.name.endswith("_total")}
        assert sent["h264"] > 0 and sent["mjpeg"] > 0
        assert verdicts == {"real", "fake", "uncertain"}

        rc = run.stop()  # boxes go when faces are no longer reported (the run ends: summary, then nothing)
        overlay.wait_for_function("document.querySelectorAll('.box').length === 0", timeout=WAIT_MS)
        dash.close()
        overlay.close()
    assert rc == 130, run.stderr
    assert not errors, errors
    assert "Traceback" not in run.stderr
    print(f"screenshots: {tmp_path / 'dashboard.png'} {shot}")


def test_the_overlay_keeps_a_face_that_fills_the_frame_and_its_label_on_the_page(placeholder_model: Path, browser,
                                                                                 tmp_path: Path) -> None:
    """A streamer close to the camera: the face's box reaches beyond the frame, and a label above it would be
    off the page (OBS shows nothing there)."""
    from tests.support.faces import tight_face_crop

    face = tight_face_crop(320)[0]
    clip = make_test_clip(tmp_path / "close.mp4", seconds=30.0, width=320, height=320, fps=10, draw=lambda i: face)
    errors: list[str] = []
    with LiveRun("watch", str(clip), "--realtime", "--model", str(placeholder_model), "--serve", "127.0.0.1:0") as run:
        base = run.wait_for_url()
        overlay = open_page(browser, f"{base}/overlay", errors, viewport={"width": 640, "height": 640})
        overlay.wait_for_function("document.querySelectorAll('.box').length === 1", timeout=WAIT_MS)
        source_box = [float(v) for v in overlay.get_attribute(".box", "data-box").split(",")]
        assert source_box[1] < 0 or source_box[0] < 0, source_box  # the box reaches beyond the frame
        box = overlay.eval_on_selector(".box", "e => e.getBoundingClientRect().toJSON()")
        label = overlay.eval_on_selector(".box .label", "e => e.getBoundingClientRect().toJSON()")
        assert box["left"] >= 0 and box["top"] >= 0 and box["right"] <= 640 and box["bottom"] <= 640, box
        assert label["top"] >= 0 and label["left"] >= 0 and label["right"] <= 640, label
        assert "label-inside" in overlay.get_attribute(".box", "class")
        overlay.close()
    assert not errors, errors


def test_faces_too_small_to_judge_are_shown_as_such_on_the_overlay_and_the_dashboard(long_clip: Path,
                                                                                     placeholder_model: Path,
                                                                                     browser) -> None:
    """Faces tracked but not judged (here below ``--min-face``) get no events: the overlay drew no box for
    them and the dashboard's cards said "uncertain", faded as if gone, while the video showed them grey."""
    errors: list[str] = []
    with LiveRun("watch", str(long_clip), "--realtime", "--model", str(placeholder_model), "--min-face", "300",
                 "--serve", "127.0.0.1:0") as run:
        base = run.wait_for_url()
        overlay = open_page(browser, f"{base}/overlay", errors, viewport={"width": 640, "height": 360})
        overlay.wait_for_function("document.querySelectorAll('.box.not-judged').length === 2", timeout=WAIT_MS)
        labels = [e.inner_text() for e in overlay.query_selector_all(".box .label")]
        assert all(re.fullmatch(r"#\d+ too small", t) for t in labels), labels
        dash = open_page(browser, f"{base}/", errors)
        dash.wait_for_function("document.querySelectorAll('.face-card.not-judged').length === 2", timeout=WAIT_MS)
        dash.wait_for_timeout(3000)  # longer than a card takes to fade when its face sends nothing
        verdicts = [e.inner_text() for e in dash.query_selector_all(".face-card .verdict")]
        assert verdicts == ["too small", "too small"] and not dash.query_selector_all(".face-card.stale"), verdicts
        overlay.close()
        dash.close()
    assert not errors, errors


def test_dashboard_shows_open_alerts_and_metrics_count_them(long_clip: Path, placeholder_model: Path, browser,
                                                           tmp_path: Path) -> None:
    """Threshold 0 makes every scored face fake: both faces raise an alert, which the page shows as a
    banner, a highlighted card and a log row; a page opened afterwards gets them from the replay."""
    errors: list[str] = []
    with LiveRun("watch", str(long_clip), "--realtime", "--model", str(placeholder_model), "--threshold", "0",
                 "--serve", "127.0.0.1:0") as run:
        base = run.wait_for_url()
        dash = open_page(browser, f"{base}/", errors, viewport={"width": 1280, "height": 800})
        dash.wait_for_function("window.sgStats && window.sgStats.alerts >= 2", timeout=WAIT_MS)
        dash.wait_for_function("document.querySelectorAll('.face-card.alerting').length === 2", timeout=WAIT_MS)
        banner = dash.inner_text("#alerts")
        assert dash.is_visible("#alerts") and len(re.findall(r"ALERT: face #\d+ looks fake", banner)) == 2, banner
        assert len(dash.query_selector_all("#log-body tr.alert")) == 2
        dash.screenshot(path=str(tmp_path / "alerts.png"))

        late = open_page(browser, f"{base}/", errors)
        late.wait_for_function("document.querySelectorAll('#log-body tr.alert').length === 2", timeout=WAIT_MS)

        families = {f.name: f for f in text_string_to_metric_families(get(f"{base}/metrics")[1].decode())}
        raised = [x.value for x in families["stream_guard_alerts"].samples
                  if x.name == "stream_guard_alerts_total" and x.labels["alert"] == "fake"]
        assert raised == [2.0]
        assert [x.value for x in families["stream_guard_open_alerts"].samples] == [2.0]
        dash.close()
        late.close()
    assert not errors, errors
    print(f"screenshot: {tmp_path / 'alerts.png'}")


def test_the_dashboard_says_the_run_ended(long_clip: Path, placeholder_model: Path, browser) -> None:
    """The status line kept saying "state connected" (and a frame count from before the end) once the run
    had ended: the server stops with the run, so the last status polled stayed on the page."""
    errors: list[str] = []
    with LiveRun("watch", str(long_clip), "--realtime", "--model", str(placeholder_model),
                 "--serve", "127.0.0.1:0") as run:
        base = run.wait_for_url()
        dash = open_page(browser, f"{base}/", errors)
        dash.wait_for_function("window.sgStats && window.sgStats.tracks > 0 && "
                               "document.getElementById('status').textContent.includes('state connected')",
                               timeout=WAIT_MS)
        assert run.stop() == 130
    dash.wait_for_function("window.sgStats.summary", timeout=WAIT_MS)
    status = dash.inner_text("#status")
    frames = [line for line in run.lines if " frames in " in line]
    assert "state ended" in status and f"frames {frames[0].split()[0]}" in status, (status, frames)
    dash.close()
    assert not errors, errors


def test_demo_serves_and_finishes(tmp_path: Path) -> None:
    result = run_cli("demo", "--seconds", "1", "--out-dir", str(tmp_path / "demo"), "--serve", "127.0.0.1:0")
    assert result.returncode == 0, result.stderr
    assert URL_LINE.search(result.stderr), result.stderr


def test_bad_serve_values_are_one_line_errors(two_faces_clip: Path) -> None:
    for bad in ("nonsense", "127.0.0.1:99999", "::1:80", ":8080"):
        result = run_cli("watch", str(two_faces_clip), "--serve", bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert len(result.stderr_lines) == 1 and result.stderr_lines[0].startswith("stream-guard: error: --serve")


def test_port_in_use_is_a_one_line_output_error(two_faces_clip: Path, placeholder_model: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_cli("watch", str(two_faces_clip), "--model", str(placeholder_model),
                         "--serve", f"127.0.0.1:{port}")
    assert result.returncode == 5, result.stderr
    errors = [line for line in result.stderr_lines if line.startswith("stream-guard: error:")]
    assert errors == [f"stream-guard: error: --serve 127.0.0.1:{port}: port {port} is already in use"]
    assert "Traceback" not in result.stderr



def test_events_and_metrics_count_every_frame_when_the_live_view_falls_behind(
        two_faces_clip: Path, placeholder_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live view is handed only the newest frame when it falls behind (a browser decoding video on a
    busy machine); its ``/events`` records and its metrics came from those frames, so records went
    missing (176 of 200 in a run with two video viewers) and frames and verdict changes were undercounted."""
    import time

    from stream_guard.config import ModelOptions, OutputOptions, RunConfig, SourceOptions
    from stream_guard.outputs.http.options import ServeOptions
    from stream_guard.outputs.http.sink import LiveViewSink
    from stream_guard.pipeline import Pipeline

    slow_write = LiveViewSink.write

    def behind(self: LiveViewSink, result) -> None:  # a live view slower than the analysis
        time.sleep(0.05)
        slow_write(self, result)

    monkeypatch.setattr(LiveViewSink, "write", behind)
    events = tmp_path / "events.jsonl"
    config = RunConfig(source=SourceOptions(str(two_faces_clip)),
                       model=ModelOptions(model_dir=placeholder_model, threshold=0.5),
                       outputs=OutputOptions(events_path=events, serve=ServeOptions("127.0.0.1", 0)))
    pipeline = Pipeline(config)
    summary = pipeline.run()
    (live,) = [w.sink for w in pipeline.workers if isinstance(w.sink, LiveViewSink)]
    assert live._metrics is not None and live.state is not None
    assert summary.frames_processed == 90
    assert live._metrics.frames._value.get() == 90  # every frame counted, though the view saw fewer
    def changes(records: list[dict]) -> list[tuple]:
        return [(r["track_id"], r["verdict"], r["stream_time_s"]) for r in records if r["type"] == "verdict"]

    logged = changes([json.loads(line) for line in events.read_text().splitlines()])
    assert len(logged) >= 2 and changes(live.state.replay()) == logged
    changed = sum(s.value for s in live._metrics.verdicts.collect()[0].samples if s.name.endswith("_total"))
    assert changed == len(logged)
