"""The desktop app (``stream-guard gui``) on a real X server (Xvfb), driven through its
programmatic API, with the real pipeline on a synthetic two-face clip; the screen is
captured with PyAV's x11grab in the same process."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream_guard.config import ModelOptions, OutputOptions, RunConfig, SourceOptions
from stream_guard.gui.app import StreamGuardApp, scale_to_fit
from stream_guard.gui.bridge import LatestResultSink, PictureThread
from stream_guard.gui.error_dialog import TITLE as ERROR_TITLE
from stream_guard.gui.sources import list_webcams, source_choices
from stream_guard.model.contract import OperatingPoint
from tests.conftest import run_cli
from tests.support.faces import astronaut_head, two_faces_passing
from tests.support.synth_video import make_test_clip
from tests.support.xvfb import SCREEN
from tools.placeholder_model import write_placeholder_model

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 test (Linux only)")


@pytest.fixture(scope="module")
def long_two_faces_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two faces for 12 s: played in real time it is still running when the test stops it."""
    path = tmp_path_factory.mktemp("gui_clips") / "two_faces_12s.mp4"
    return make_test_clip(path, seconds=12.0, width=640, height=360, fps=30, draw=two_faces_passing(n_frames=360))


@pytest.fixture
def app(xvfb: int, monkeypatch: pytest.MonkeyPatch, placeholder_model: Path) -> Iterator[StreamGuardApp]:
    monkeypatch.setenv("DISPLAY", f":{xvfb}")
    root = tk.Tk(className="stream_guard_test")
    root.geometry("+20+20")
    config = RunConfig(source=SourceOptions(spec="demo"), model=ModelOptions(model_dir=placeholder_model))
    application = StreamGuardApp(root, config, show_dialogs=False)
    try:
        yield application
    finally:
        application.close()


def pump_until(app: StreamGuardApp, condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Run Tk's event loop until ``condition()`` holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.root.update()
        if condition():
            return True
        time.sleep(0.01)  # yield the CPU between event-loop passes
    return condition()


def grab_screen(display: int) -> np.ndarray:
    """One frame of the whole X screen, RGB."""
    options = {"video_size": f"{SCREEN[0]}x{SCREEN[1]}", "draw_mouse": "0", "framerate": "30"}
    with av.open(f":{display}", format="x11grab", options=options) as container:
        for frame in container.decode(video=0):
            return frame.to_ndarray(format="rgb24")
    raise AssertionError("x11grab delivered no frame")


def _new_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


@linux_only
def test_app_shows_live_view_and_faces_then_stops(app: StreamGuardApp, xvfb: int, long_two_faces_clip: Path,
                                                  tmp_path: Path) -> None:
    assert "UNTRAINED" in app.warning_text  # the placeholder model says so from the start
    assert app.status_text.startswith("idle | model untrained-placeholder 0.0.0, threshold 0.500 |"), app.status_text
    before = set(threading.enumerate())
    app.set_source(str(long_two_faces_clip))
    app.set_realtime(True)
    assert app.start(), app.last_error
    assert app.running and not app.start()  # a second Start while running does nothing
    shown = pump_until(app, lambda: app.frames_shown >= 10 and len(app.panel.rows) == 2)
    assert shown, f"frames {app.frames_shown}, faces {app.panel.rows}, status {app.status_text!r}"
    assert app.running, "the 12 s clip in real time should still be playing"
    assert app.status_text.startswith("running") and "fps" in app.status_text and "latency" in app.status_text
    assert app.status_text.endswith("| model untrained-placeholder 0.0.0, threshold 0.500"), app.status_text
    assert [r.track_id for r in app.panel.rows] == sorted({r.track_id for r in app.panel.rows})
    pump_until(app, lambda: all(r.score is not None for r in app.panel.rows), timeout=30)

    screen = grab_screen(xvfb)
    shot = tmp_path / "gui.png"
    assert cv2.imwrite(str(shot), cv2.cvtColor(screen, cv2.COLOR_RGB2BGR))
    print(f"screenshot: {shot}")
    x, y, w, h = app.view_geometry()
    assert (w, h) == app.view_size
    view = screen[y:y + h, x:x + w].astype(np.int16)
    assert view.std() > 20, f"the view looks blank; see {shot}"
    assert np.abs(view - 90).max(axis=2).__lt__(8).mean() > 0.2, "the clip's grey background should show"
    px, py = app.panel.winfo_rootx(), app.panel.winfo_rooty()
    panel = screen[py:py + app.panel.winfo_height(), px:px + app.panel.winfo_width()].astype(np.int16)
    bar_colours = np.array([[0xe5, 0x39, 0x35], [0x43, 0xa0, 0x47], [0xf9, 0xa8, 0x25]], np.int16)
    coloured = [(np.abs(panel - c).max(axis=2) < 10).sum() for c in bar_colours]
    assert sum(coloured) > 200, f"no score bar in the side panel; see {shot}"

    assert app.stop()
    assert not app.running and app.pipeline_thread is None
    assert pump_until(app, lambda: not _new_threads(before), timeout=30), _new_threads(before)
    assert app.status_text.startswith("stopped"), app.status_text
    assert app.start_button.instate(["!disabled"]) and app.stop_button.instate(["disabled"])


@linux_only
def test_speak_alerts_box_adds_spoken_alerts_to_the_next_start(xvfb: int, monkeypatch: pytest.MonkeyPatch,
                                                                placeholder_model: Path) -> None:
    """The old Tkinter app spoke its verdict; this one says each alert when "speak alerts" is ticked.
    Threshold 0 makes every scored face fake, so the demo raises alerts at once."""
    monkeypatch.setenv("DISPLAY", f":{xvfb}")
    root = tk.Tk(className="stream_guard_test")
    config = RunConfig(source=SourceOptions(spec="demo"), model=ModelOptions(model_dir=placeholder_model,
                                                                               threshold=0.0))
    app = StreamGuardApp(root, config, show_dialogs=False)
    try:
        def speech_sinks() -> list:
            thread = app.pipeline_thread
            return [] if thread is None else [w.sink for w in thread.pipeline.workers if w.sink.name == "speech"]

        app.set_source("demo")
        assert app.start() and pump_until(app, lambda: app.frames_shown > 0)
        assert speech_sinks() == []  # unticked: no speech
        assert app.stop()
        app.set_speak(True)
        assert app.start(), app.last_error
        assert pump_until(app, lambda: any(sink.machine.open_tracks for sink in speech_sinks()), timeout=60), \
            app.status_text
        assert app.stop()
    finally:
        app.close()


@linux_only
def test_the_threshold_box_offers_the_models_named_thresholds(xvfb: int, monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path, two_faces_clip: Path) -> None:
    """``--threshold 0.7`` is selected at first; picking ``quiet`` shows what it flags and judges the next Start."""
    spec = write_placeholder_model(tmp_path / "model")
    dataclasses.replace(spec, operating_points=(OperatingPoint("quiet", 0.9, 0.1, 0.3),)).save()
    monkeypatch.setenv("DISPLAY", f":{xvfb}")
    root = tk.Tk(className="stream_guard_test")
    config = RunConfig(source=SourceOptions(spec="demo"), model=ModelOptions(model_dir=spec.folder, threshold=0.7))
    app = StreamGuardApp(root, config, show_dialogs=False)
    try:
        assert app.threshold_entries == ["default 0.500", "quiet 0.900", "0.700"]
        assert app.threshold_var.get() == "0.700" and ", threshold 0.700 |" in app.status_text, app.status_text

        def judged_at() -> float | None:
            thread = app.pipeline_thread
            return None if thread is None or thread.pipeline.provenance is None else thread.pipeline.provenance.threshold

        for choice, threshold in (("quiet", 0.9), ("default 0.500", 0.5)):
            app.set_threshold(choice)
            assert app.panel.threshold == threshold
            if choice == "quiet":
                assert ", threshold 0.900 (flags 10% of reals, catches 30% of fakes out of fold) |" in app.status_text
            app.set_source(str(two_faces_clip))
            assert app.start(), app.last_error
            assert pump_until(app, lambda: judged_at() is not None), app.status_text
            assert judged_at() == threshold
            app.set_threshold("0.700")  # while running: from the next Start on
            assert judged_at() == threshold and app.panel.threshold == threshold
            assert app.stop()
        with pytest.raises(ValueError, match="no threshold 'loud'"):
            app.set_threshold("loud")
    finally:
        app.close()


@linux_only
def test_source_errors_show_in_the_status_bar(app: StreamGuardApp, tmp_path: Path) -> None:
    app.set_source(str(tmp_path / "missing.mp4"))
    assert not app.start()
    assert "no such file" in (app.last_error or "") and app.status_text.startswith("error:")
    app.set_source("gopher://example.com/x")
    assert not app.start() and "unknown URL scheme" in (app.last_error or "")
    app.set_source("-")  # standard input: a window has none to be piped
    assert not app.start() and "is for the command line: stream-guard watch -" in (app.last_error or "")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 200)
    app.set_source(str(broken))
    assert app.start()  # the name is fine; the pipeline thread finds it is not a video
    assert pump_until(app, lambda: not app.running and app.last_error is not None)
    assert "not a video" in app.last_error and "\n" not in app.last_error
    assert app.start_button.instate(["!disabled"])


@linux_only
def test_a_picture_opened_in_the_app_gets_its_verdict(app: StreamGuardApp, xvfb: int, tmp_path: Path) -> None:
    """"Open a video or image" offered pictures, then Start said "not a video": a picture is now scored as
    scan scores it, shown with its face marked, its verdict in the status bar."""
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut_head(), cv2.COLOR_RGB2BGR))
    app.set_source(str(photo))
    assert app.start(), app.last_error
    assert isinstance(app.pipeline_thread, PictureThread)
    assert pump_until(app, lambda: app.pipeline_thread is None), app.status_text  # ended, and the app saw it
    assert app.last_error is None, app.last_error
    assert re.fullmatch(r"picture: (real|fake) [01]\.\d{3} \(1 face\) \| model untrained-placeholder 0\.0\.0, "
                        r"threshold 0\.500", app.status_text), app.status_text
    assert app.frames_shown >= 1 and len(app.panel.rows) == 1
    x, y, w, h = app.view_geometry()
    view = grab_screen(xvfb)[y:y + h, x:x + w].astype(np.int16)
    assert view.std() > 20, "the picture should show"
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))
    app.set_source(str(blank))
    assert app.start() and pump_until(app, lambda: app.pipeline_thread is None)
    assert app.status_text.startswith("picture: no face found |"), app.status_text


@linux_only
def test_stop_ends_the_scoring_of_a_long_animated_picture(app: StreamGuardApp, tmp_path: Path) -> None:
    """An animated picture is scored as the video it plays as: Stop ends it, as it ends a video."""
    face = astronaut_head()
    frames = []
    for i in range(400):  # 40 s of a face moving
        canvas = np.full((240, 320, 3), 90, np.uint8)
        canvas[40:40 + 150, 20 + i % 100:20 + i % 100 + 130] = cv2.resize(face, (130, 150))
        frames.append(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    animation = cv2.Animation()
    animation.frames, animation.durations = frames, [100] * len(frames)
    sticker = tmp_path / "long.webp"
    assert cv2.imwriteanimation(str(sticker), animation)
    app.set_source(str(sticker))
    assert app.start(), app.last_error
    assert pump_until(app, lambda: app.frames_shown >= 3), app.status_text
    started = time.monotonic()
    assert app.stop()
    assert time.monotonic() - started < 10
    assert app.pipeline_thread is None and app.last_error is None
    assert re.fullmatch(r"picture: (real|fake) [01]\.\d{3} \(1 face\) \(stopped: of what was read\) \| .*",
                        app.status_text), app.status_text


@linux_only
def test_the_small_faces_box_finds_a_call_gallerys_faces(app: StreamGuardApp, tmp_path: Path) -> None:
    """A 1280x720 call in gallery view: the detector's whole-frame pass finds none of its nine faces; the
    "small faces" box (--detect-tiles always) searches the frames in tiles too, from the next Start."""
    face = cv2.resize(astronaut_head(), (173, 200))

    def gallery(i: int) -> np.ndarray:
        canvas = np.full((720, 1280, 3), 40, np.uint8)
        for row in range(3):
            for column in range(3):
                x0, y0 = 130 + column * 423 + i % 5, 18 + row * 236
                canvas[y0:y0 + 200, x0:x0 + 173] = face
        return canvas

    clip = make_test_clip(tmp_path / "call.mp4", seconds=1.5, width=1280, height=720, fps=10, draw=gallery)
    app.set_source(str(clip))
    app.set_realtime(False)
    faces = {}
    for small in (False, True):
        app.set_small_faces(small)
        assert app.start(), app.last_error
        assert pump_until(app, lambda: app.pipeline_thread is None), app.status_text
        faces[small] = len(app.panel.rows)
    assert faces == {False: 0, True: 9}, faces


@linux_only
def test_an_output_that_fails_during_a_run_shows_as_an_error(xvfb: int, monkeypatch: pytest.MonkeyPatch,
                                                             placeholder_model: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("DISPLAY", f":{xvfb}")
    full = tmp_path / "events.jsonl"
    full.symlink_to("/dev/full")  # every write fails as on a full disk
    clip = make_test_clip(tmp_path / "c.mp4", seconds=1.0, width=320, height=180, fps=10)
    root = tk.Tk(className="stream_guard_test")
    config = RunConfig(source=SourceOptions(spec="demo"), model=ModelOptions(model_dir=placeholder_model),
                       outputs=OutputOptions(events_path=full))
    app = StreamGuardApp(root, config, show_dialogs=False)
    try:
        app.set_source(str(clip))
        app.set_realtime(False)
        assert app.start(), app.last_error
        assert pump_until(app, lambda: app.pipeline_thread is None)
        assert app.last_error == "output 'events' failed during the run: what it wrote is incomplete"
        assert app.status_text.startswith("error: output 'events' failed")
    finally:
        app.close()


@linux_only
def test_closing_the_window_stops_the_pipeline(app: StreamGuardApp, long_two_faces_clip: Path) -> None:
    before = set(threading.enumerate())
    app.set_source(str(long_two_faces_clip))
    assert app.start()
    assert pump_until(app, lambda: app.frames_shown > 0)
    thread = app.pipeline_thread
    root = app.root
    root.tk.call(root.protocol("WM_DELETE_WINDOW"))  # what the window manager's close button runs
    assert thread is not None and not thread.is_alive()
    assert thread.summary is not None and thread.summary.interrupted
    with pytest.raises(tk.TclError):
        root.winfo_exists()
    deadline = time.monotonic() + 30
    while _new_threads(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _new_threads(before)


def test_webcam_list_and_choices(tmp_path: Path) -> None:
    for name in ("video10", "video0", "video2", "vbi0", "videodev"):
        (tmp_path / name).touch()
    assert list_webcams("linux", tmp_path) == ["webcam:0", "webcam:2", "webcam:10"]
    assert list_webcams("linux", tmp_path / "absent") == []
    assert list_webcams("win32") == ["webcam:0"]
    assert source_choices("linux", tmp_path)[:5] == ["webcam:0", "webcam:2", "webcam:10", "screen", "demo"]


def test_sink_keeps_only_the_newest_result() -> None:
    sink = LatestResultSink()
    assert sink.take() is None
    for i in range(3):
        sink.write(i)  # type: ignore[arg-type]  # the slot does not look inside
    assert sink.take() == 2 and sink.take() is None and sink.written == 3


def test_scale_to_fit() -> None:
    image = np.zeros((360, 640, 3), np.uint8)
    assert scale_to_fit(image, (960, 540)).shape == (540, 960, 3)
    assert scale_to_fit(np.zeros((1000, 500, 3), np.uint8), (960, 540)).shape == (540, 270, 3)


@linux_only
def test_gui_without_display_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    result = run_cli("gui")
    assert result.returncode == 5 and len(result.stderr_lines) == 1, result.stderr
    assert "no display" in result.stderr


def _sigterm_once_window_shows(source: Path, model: Path, xvfb: int, title: str) -> tuple[int, str]:
    """Run ``stream-guard gui SOURCE --start``, send SIGTERM once a window titled ``title`` shows; its exit
    code and stderr."""
    if shutil.which("xwininfo") is None:
        pytest.skip("xwininfo is not installed (Debian: apt-get install x11-utils)")
    env = {**os.environ, "DISPLAY": f":{xvfb}"}
    proc = subprocess.Popen([sys.executable, "-m", "stream_guard", "gui", str(source), "--start", "--model",
                             str(model)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            tree = subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True, text=True).stdout
            if f'"{title}"' in tree:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no window titled {title!r} appeared (rc {proc.poll()})")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


@linux_only
def test_gui_command_runs_and_stops_on_sigterm(xvfb: int, long_two_faces_clip: Path, placeholder_model: Path) -> None:
    """The real command: its window appears, and SIGTERM closes it cleanly (exit 0)."""
    returncode, err = _sigterm_once_window_shows(long_two_faces_clip, placeholder_model, xvfb, "stream_guard")
    assert returncode == 0, err
    assert "Traceback" not in err


@linux_only
@pytest.mark.parametrize("broken", ["missing", "not_a_video"])
def test_an_error_window_does_not_hold_up_sigterm(broken: str, xvfb: int, placeholder_model: Path,
                                                  tmp_path: Path) -> None:
    """Tk's modal message box ran an event loop of its own: with one open, SIGTERM waited for someone to
    press OK (an error from the run, shown by the app's polling), or the app's window was destroyed
    under the box and a Tcl traceback printed (an error at Start)."""
    source = tmp_path / "call.mp4"
    if broken == "not_a_video":
        source.write_text("not a video")  # found at Start, refused by the run's thread
    returncode, err = _sigterm_once_window_shows(source, placeholder_model, xvfb, ERROR_TITLE)
    assert returncode == 0, err
    assert "Traceback" not in err, err


def test_a_live_source_that_drops_shows_in_the_status_bar(app: StreamGuardApp, long_two_faces_clip: Path) -> None:
    """The camera's server goes away: the status bar kept saying "running | 30 fps" over the last, frozen
    picture, though the run was reconnecting."""
    from tests.support.rtsp_fixture import RtspServerProcess

    with RtspServerProcess(long_two_faces_clip) as server:
        app.set_source(server.url)
        assert app.start()
        assert pump_until(app, lambda: app.status_text.startswith("running"))
        server.stop()
        assert pump_until(app, lambda: app.status_text.startswith("source reconnecting"), timeout=30), \
            app.status_text
    app.stop()
