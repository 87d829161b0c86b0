"""Screen capture on Wayland: the desktop portal's share handshake over a real D-Bus session bus, the
shared stream read from a real PipeWire (GStreamer's pipewiresrc), the pipeline finding the face
in it, reconnects that restore the share without asking, and the user's "cancel" and "stop
sharing". The portal backend is a stand-in (tests/support/pipewire_session.py says why)."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np
import pytest

from stream_guard.config import ModelOptions, RunConfig, SourceOptions
from stream_guard.errors import ConfigError
from stream_guard.pipeline import Pipeline
from stream_guard.sources import open_source, parse_source, portal_screen, with_input_options
from stream_guard.sources.portal_screen import gstreamer_command, stream_sizes
from stream_guard.sources.resize_watch import ResizeWatch
from stream_guard.sources.spec import PORTAL_FORMAT
from stream_guard.types import FrameResult
from tests.conftest import run_cli
from tests.support.faces import astronaut_head
from tests.support.pipewire_session import (Session, StandInPortal, missing_programs, pipewire_session,
                                            shared_picture)

SCREEN = (800, 480)
FACE_AT = (370, 90)  # the astronaut's head (260x300) is drawn with its top left corner here


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    missing = missing_programs()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (tools/run_tests.sh installs them)")
    with pipewire_session(tmp_path_factory.mktemp("pipewire")) as running:
        yield running


@pytest.fixture
def screen(session: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The shared screen's PipeWire node; this process (and the CLI it starts) uses the session's bus."""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", session.bus_address)
    with shared_picture(session, astronaut_head(), SCREEN, FACE_AT) as node:
        yield node


def _kill_gstreamer_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, subprocess.run, (["pkill", "-f", "pipewiresrc fd="],))
    timer.start()
    return timer


def test_a_shared_screen_is_read_from_pipewire_and_its_face_found(
        session: Session, screen: int, placeholder_model: Path) -> None:
    results: list[FrameResult] = []
    config = RunConfig(source=SourceOptions("screen:portal", max_frames=30),
                       model=ModelOptions(model_dir=placeholder_model))
    with StandInPortal(session, screen, SCREEN) as portal:
        summary = Pipeline(config, on_result=results.append).run()
    assert summary.error is None and summary.frames_read == 30
    assert (results[0].frame.width, results[0].frame.height) == SCREEN
    centres = [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for r in results[-10:] for f in r.faces]
    assert len(centres) >= 5
    assert all(abs(x - 500) < 40 and abs(y - 240) < 50 for x, y in centres)  # the head's centre
    # one share, asked for as a screen or a window, without the pointer, kept while we run; then ended
    assert portal.starts == 1
    assert portal.select_options == [{"types": 3, "multiple": False, "cursor_mode": 1, "persist_mode": 1}]
    assert len(portal.closed_sessions) == 1


def test_a_broken_read_is_reopened_and_the_share_restored_without_asking(
        session: Session, screen: int, placeholder_model: Path) -> None:
    config = RunConfig(source=SourceOptions("screen:portal", max_frames=75),
                       model=ModelOptions(model_dir=placeholder_model))
    with StandInPortal(session, screen, SCREEN) as portal:
        timer = _kill_gstreamer_after(1.0)
        summary = Pipeline(config).run()
        timer.join()
    assert summary.error is None and summary.frames_read == 75
    assert portal.starts == 2 and portal.dialogs == 1  # restored without asking again
    assert portal.select_options[1]["restore_token"] == "restore-1"


def test_stopping_the_share_on_the_desktop_ends_the_run_cleanly(
        session: Session, screen: int, placeholder_model: Path) -> None:
    config = RunConfig(source=SourceOptions("screen:portal", max_frames=600),  # 20 s: a run that goes on fails
                       model=ModelOptions(model_dir=placeholder_model))
    with StandInPortal(session, screen, SCREEN) as portal:
        timer = threading.Timer(1.5, portal.stop_sharing)
        timer.start()
        started = time.monotonic()
        summary = Pipeline(config).run()
        took = time.monotonic() - started
        timer.join()
    assert summary.error is None and 10 < summary.frames_read < 600
    assert took < 15 and portal.starts == 1  # not reopened


def test_a_cancelled_share_dialog_is_one_clear_error(session: Session, screen: int, placeholder_model: Path) -> None:
    with StandInPortal(session, screen, SCREEN, answer="cancel"):
        result = run_cli("watch", "screen:portal", "--model", str(placeholder_model), "--max-frames", "5")
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        "stream-guard: error: screen sharing was cancelled in the desktop's share dialog"


def test_a_desktop_without_a_screen_cast_portal_is_one_clear_error(
        session: Session, screen: int, placeholder_model: Path) -> None:
    result = run_cli("watch", "screen:portal", "--model", str(placeholder_model), "--max-frames", "5")
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert last.startswith("stream-guard: error: no screen-cast portal on this desktop's D-Bus") and "PipeWire" in last


def test_doctor_says_how_the_screen_would_be_captured(session: Session, screen: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    without = [line for line in run_cli("doctor").stdout.splitlines() if "screen capture" in line]
    with StandInPortal(session, screen, SCREEN):
        ready = [line for line in run_cli("doctor").stdout.splitlines() if "screen capture" in line]
    assert ready == ["[     ok] screen capture   Wayland session: through the desktop portal (screen-cast v4) "
                     "and GStreamer's pipewiresrc"]
    assert len(without) == 1 and without[0].startswith("[   warn]") and "no screen-cast portal" in without[0]


def test_screen_on_wayland_goes_through_the_portal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    monkeypatch.setenv("DISPLAY", ":0")  # XWayland's: capturing it would give black frames
    assert parse_source("screen", platform="linux").format == PORTAL_FORMAT
    assert parse_source("screen::0", platform="linux").format == "x11grab"  # an X display asked for by name
    with pytest.raises(ConfigError, match="share just the window"):
        parse_source("screen@640x480+0+0", platform="linux")
    monkeypatch.delenv("WAYLAND_DISPLAY")
    monkeypatch.setenv("XDG_SESSION_TYPE", "x11")
    assert parse_source("screen", platform="linux").format == "x11grab"
    assert parse_source("screen:portal", platform="linux").format == PORTAL_FORMAT  # GNOME on Xorg has it too


def test_the_pointer_is_shown_when_asked_for(session: Session, screen: int) -> None:
    spec = with_input_options(parse_source("screen:portal", platform="linux"), [("draw_mouse", "1")])
    with StandInPortal(session, screen, SCREEN) as portal, open_source(spec):
        pass
    assert portal.select_options[0]["cursor_mode"] == 2  # embedded in the picture


def test_a_portal_screen_takes_a_frame_rate_and_no_other_input_option() -> None:
    spec = parse_source("screen:portal", platform="linux")
    assert open_source(with_input_options(spec, [("framerate", "12")])).rate == 12
    with pytest.raises(ConfigError, match="only --input-option framerate"):
        with_input_options(spec, [("video_size", "640x480")])
    with pytest.raises(ConfigError, match="not a frame rate"):
        open_source(with_input_options(spec, [("framerate", "fast")]))


# A window being resized. PipeWire 0.3.65's pipewiresink (the stand-in compositor above) cannot
# change its size mid-stream, so a GStreamer source that does stands in for the shared stream:
# a picture of SMALL, then one of WIDE, each repeated, one after the other (concat), at the pace
# of the clock as a screen's would be.
SMALL, WIDE = (320, 240), (400, 200)
GREY, WHITE_SQUARE = 90, (40, 30, 140, 130)  # the square's corners in either picture


def _window_pictures(folder: Path) -> dict[tuple[int, int], Path]:
    paths = {}
    for width, height in (SMALL, WIDE):
        picture = np.full((height, width, 3), GREY, np.uint8)
        cv2.rectangle(picture, WHITE_SQUARE[:2], WHITE_SQUARE[2:], (255, 255, 255), -1)
        paths[(width, height)] = folder / f"window_{width}x{height}.png"
        cv2.imwrite(str(paths[(width, height)]), picture)
    return paths


def _resized_window(pictures: dict[tuple[int, int], Path], small_frames: int) -> list[str]:
    """Source elements: SMALL for ``small_frames`` frames (none: WIDE at once), then WIDE for a minute."""
    def still(size: tuple[int, int], frames: int) -> list[str]:
        return ["filesrc", f"location={pictures[size]}", "!", "pngdec", "!", "imagefreeze", f"num-buffers={frames}",
                "!", "video/x-raw,framerate=30/1", "!", "joined."]
    first = still(SMALL, small_frames) if small_frames else []
    return [*first, *still(WIDE, 1800), "concat", "name=joined", "!", "clocksync"]


def _looks_like_the_window(image: np.ndarray) -> bool:
    """The picture, whole (grey, or black where it is letterboxed, around a white square): not garbage."""
    h, w = image.shape[:2]
    corners = [image[2, 2], image[2, w - 3], image[h - 3, 2], image[h - 3, w - 3]]
    around = all(abs(int(c.mean()) - GREY) < 8 or int(c.max()) < 8 for c in corners)
    inside = image[90, 90].min() > 240 if (w, h) != SMALL else image[80, 90].min() > 240
    return around and inside and np.ptp(image[:, :, 0] - image[:, :, 2]) < 40  # grey: no colour garbage


def test_a_picture_that_changes_size_is_scaled_into_the_first_size_not_garbled(tmp_path: Path) -> None:
    """YUV4MPEG states one size: new sizes are fitted into it (letterboxed), and the child says what
    size the stream took."""
    read_fd, write_fd = os.pipe()
    with (tmp_path / "verbose.txt").open("wb") as verbose:
        child = subprocess.Popen(gstreamer_command(_resized_window(_window_pictures(tmp_path), 15), Fraction(30),
                                                   write_fd, SMALL), pass_fds=(write_fd,), stdout=verbose,
                                 stderr=subprocess.DEVNULL)
        os.close(write_fd)
        images = []
        try:
            with av.open(f"pipe:{read_fd}", format="yuv4mpegpipe") as container:
                for frame in container.decode(video=0):
                    images.append(frame.to_ndarray(format="rgb24"))
                    if len(images) == 45:
                        break
        finally:
            child.kill()
            child.wait()
            os.close(read_fd)
    assert len(images) == 45 and all(i.shape == (SMALL[1], SMALL[0], 3) for i in images)
    assert all(_looks_like_the_window(i) for i in images)
    last = images[-1]  # WIDE scaled by 0.8 to 320x160, with 40 black rows above and below
    assert last[:38].max() < 8 and last[-38:].max() < 8 and abs(int(last[45:195].mean()) - GREY) < 40
    assert stream_sizes((tmp_path / "verbose.txt").read_bytes())[-2:] == [SMALL, WIDE]


def test_a_share_that_settles_at_a_new_size_is_read_again_at_that_size(
        session: Session, screen: int, placeholder_model: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pictures = _window_pictures(tmp_path)
    launched: list[int] = []

    def window(_stream: object) -> list[str]:  # the first share's look and reader: resized after 0.5 s
        launched.append(1)
        return _resized_window(pictures, 15 if len(launched) <= 2 else 0)

    monkeypatch.setattr(portal_screen, "pipewire_elements", window)
    results: list[FrameResult] = []
    config = RunConfig(source=SourceOptions("screen:portal", max_frames=120),
                       model=ModelOptions(model_dir=placeholder_model))
    with StandInPortal(session, screen, SCREEN) as portal:
        pipeline = Pipeline(config, on_result=results.append)
        summary = pipeline.run()
    assert summary.error is None and summary.frames_read == 120
    sizes = [(r.frame.width, r.frame.height) for r in results]
    switch = sizes.index(WIDE)
    assert set(sizes[:switch]) == {SMALL} and set(sizes[switch:]) == {WIDE} and len(sizes) - switch > 20
    assert all(_looks_like_the_window(r.frame.image) for r in results)
    reopened = [e for e in pipeline.stats.source_events if e["state"] == "reconnecting"]
    assert len(reopened) == 1 and "is now 400x200: reading it again at that size" in reopened[0]["detail"]
    assert portal.starts == 2 and portal.dialogs == 1  # restored without asking again


def test_a_resize_is_acted_on_once_the_window_stops_changing_size() -> None:
    watch = ResizeWatch(read_at=(640, 480), settle_s=1.0)
    watch.note((640, 480), 0.0)
    assert watch.settled_size(5.0) is None
    for step in range(10):  # dragged larger, a size every 0.1 s
        watch.note((650 + 10 * step, 480 + 5 * step), 6.0 + 0.1 * step)
        assert watch.settled_size(6.05 + 0.1 * step) is None
    assert watch.settled_size(7.8) is None and watch.settled_size(7.95) == (740, 525)
    watch.note((640, 480), 8.0)  # and back before it settled elsewhere: nothing to do
    assert watch.settled_size(20.0) is None
