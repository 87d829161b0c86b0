"""Screen capture on Wayland: the desktop portal's share handshake over a real D-Bus session bus, the
shared stream read from a real PipeWire (GStreamer's pipewiresrc), the pipeline finding the face
in it, reconnects that restore the share without asking, and the user's "cancel" and "stop
sharing". The portal backend is a stand-in (tests/support/pipewire_session.py says why)."""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from stream_guard.config import ModelOptions, RunConfig, SourceOptions
from stream_guard.errors import ConfigError
from stream_guard.pipeline import Pipeline
from stream_guard.sources import open_source, parse_source, with_input_options
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
    assert portal.starts == 2
    assert portal.select_options[1]["restore_token"] == "restore-1"  # the desktop need not ask again


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
