"""``screen@MONITOR``: one monitor of a real X display (Xvfb, its monitors set with ``xrandr
--setmonitor`` as RandR 1.5 reports a desktop's), found by name or number, read again when its
place or size changes or it comes back after being unplugged; and the errors a user sees."""
from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from stream_guard.errors import ConfigError, SourceNotFoundError
from stream_guard.gui.sources import source_choices
from stream_guard.sources import parse_source
from stream_guard.sources.x11_display import X11Monitor, XDisplay
from stream_guard.sources.x11_targets import choose_monitor
from tests.conftest import run_cli
from tests.support.x11_windows import HEAD_AT, TkWindow, face_centres, watch
from tests.support.xvfb import running_xvfb

LEFT, RIGHT = "800/200x1000/300+0+0", "800/200x1000/300+800+0"  # xrandr's W/mmxH/mm+X+Y
WINDOW_AT = (900, 100)  # on the right monitor
HEAD_ON_RIGHT = (WINDOW_AT[0] + HEAD_AT[0] - 800 + 130, WINDOW_AT[1] + HEAD_AT[1] + 150)  # its centre


def _xrandr(*args: str) -> None:
    subprocess.run(["xrandr", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def two_monitors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A 1600x1000 display of its own, split into monitors "left" and "right"."""
    if shutil.which("Xvfb") is None or shutil.which("xrandr") is None:
        pytest.skip("not installed: Xvfb or xrandr (tools/run_tests.sh installs them)")
    with running_xvfb(tmp_path / "xvfb.log", (1600, 1000)) as number:
        monkeypatch.setenv("DISPLAY", f":{number}")
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
        held = XDisplay(f":{number}")  # an X server resets, forgetting its monitors, when its last client leaves
        try:
            _xrandr("--setmonitor", "left", LEFT, "none")
            _xrandr("--setmonitor", "right", RIGHT, "none")
            yield f":{number}"
        finally:
            held.close()


def _near(centres: list[tuple[float, float]], at: tuple[float, float]) -> bool:
    return len(centres) >= 5 and all(abs(x - at[0]) < 40 and abs(y - at[1]) < 50 for x, y in centres)


def test_one_monitor_is_captured_by_its_name_or_number(two_monitors: str, placeholder_model: Path) -> None:
    with TkWindow("Call with Alice", f"640x480+{WINDOW_AT[0]}+{WINDOW_AT[1]}") as window:
        summary, results, _ = watch("screen@right", placeholder_model, 30, window)
        by_number = run_cli("watch", "screen@1", "--model", str(placeholder_model), "--max-frames", "3")
    assert summary.error is None and summary.frames_read == 30
    assert {(r.frame.width, r.frame.height) for r in results} == {(800, 1000)}
    assert _near(face_centres(results[-15:]), HEAD_ON_RIGHT)
    assert by_number.returncode == 0, by_number.stderr


def test_a_monitor_that_moves_or_is_unplugged_is_found_again(two_monitors: str, placeholder_model: Path) -> None:
    moved = "600/150x800/200+1000+0"

    def rearrange() -> None:  # the head stays where it was on the screen
        _xrandr("--delmonitor", "right")  # RandR redefines a monitor by deleting it first
        _xrandr("--setmonitor", "right", moved, "none")

    def unplug_and_back() -> None:
        _xrandr("--delmonitor", "right")
        threading.Timer(3.0, _xrandr, ("--setmonitor", "right", RIGHT, "none")).start()

    steps = [threading.Timer(1.0, rearrange), threading.Timer(3.5, unplug_and_back)]
    with TkWindow("Call with Alice", f"640x480+{WINDOW_AT[0]}+{WINDOW_AT[1]}") as window:
        for step in steps:
            step.start()
        try:
            summary, results, events = watch("screen@right", placeholder_model, 210, window)
        finally:
            for step in steps:
                step.join()
    assert summary.error is None and summary.frames_read == 210
    sizes = [(r.frame.width, r.frame.height) for r in results]
    changes = [size for i, size in enumerate(sizes) if i == 0 or size != sizes[i - 1]]
    assert changes == [(800, 1000), (600, 800), (800, 1000)]
    details = [e["detail"] for e in events if e["state"] == "reconnecting"]
    assert details[0].endswith("monitor right is now 600x800+1000+0: reading it again there")
    assert details[1].endswith("monitor right was disconnected")
    assert any("no monitor 'right'" in d for d in details[2:])  # looked for until it came back
    head_moved = (HEAD_ON_RIGHT[0] - 200, HEAD_ON_RIGHT[1])
    on_moved = [r for r in results if (r.frame.width, r.frame.height) == (600, 800)]
    assert _near(face_centres(on_moved[-10:]), head_moved) and _near(face_centres(results[-10:]), HEAD_ON_RIGHT)


def test_a_monitor_that_is_not_there_is_one_clear_error(two_monitors: str, placeholder_model: Path) -> None:
    result = run_cli("watch", "screen@HDMI-9", "--model", str(placeholder_model), "--max-frames", "3")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"stream-guard: error: no monitor 'HDMI-9' on X display {two_monitors}; its monitors: "
        "0 left 800x1000+0+0; 1 right 800x1000+800+0; 2 screen 1600x1000+0+0")


def test_a_whole_screen_over_the_size_limit_names_the_monitors_to_take_instead(
        two_monitors: str, placeholder_model: Path) -> None:
    result = run_cli("watch", "screen", "--model", str(placeholder_model), "--max-frames", "3", "--max-megapixels", "1")
    assert result.returncode == 3 and result.stderr.strip().splitlines()[-1] == (
        f"stream-guard: error: screen {two_monitors}: frame size 1600x1000 (1.6 MP) is above the limit of 1 MP (raise "
        "it with --max-megapixels, or capture one monitor: screen@left, screen@right, screen@screen)")


def test_the_desktop_app_offers_each_monitor(two_monitors: str, tmp_path: Path) -> None:
    assert source_choices("linux", tmp_path)[:5] == ["screen", "demo", "screen@left", "screen@right",
                                                     "screen@screen"]


def test_monitors_are_chosen_by_name_number_or_primary() -> None:
    monitors = [X11Monitor(0, "eDP-1", 1920, 1080, 0, 0, primary=True), X11Monitor(1, "HDMI-1", 2560, 1440, 1920, 0)]
    assert choose_monitor(monitors, "hdmi-1", ":0").name == "HDMI-1"
    assert choose_monitor(monitors, "1", ":0").name == "HDMI-1"
    assert choose_monitor(monitors, "primary", ":0").name == "eDP-1"
    with pytest.raises(SourceNotFoundError, match=r"its monitors: 0 eDP-1 1920x1080\+0\+0 \(primary\); 1 HDMI-1"):
        choose_monitor(monitors, "DP-2", ":0")
    unmarked = [X11Monitor(0, "HDMI-1", 2560, 1440, 0, 0), X11Monitor(1, "DP-1", 1920, 1080, 2560, 0)]
    assert choose_monitor(unmarked, "primary", ":0").name == "HDMI-1"  # none marked: the first, not an error
    with pytest.raises(SourceNotFoundError, match="no monitor 'primary'.*no monitors"):
        choose_monitor([], "primary", ":0")


def test_a_monitor_name_is_not_a_region_and_only_x11_takes_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":7")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    spec = parse_source("screen@HDMI-1", platform="linux")
    assert (spec.url, spec.format, spec.monitor, spec.region, spec.is_live) == (":7", "x11grab", "HDMI-1", None, True)
    assert parse_source("screen@640x480+0+0", platform="linux").region is not None
    with pytest.raises(ConfigError, match="is not WIDTHxHEIGHT"):  # a mistyped region is still called one
        parse_source("screen@640x480", platform="linux")
    for platform in ("win32", "darwin"):
        with pytest.raises(ConfigError, match="a monitor is chosen by name on Linux with X11 only"):
            parse_source("screen@HDMI-1", platform=platform)
    with pytest.raises(ConfigError, match="pick it in the desktop's share dialog"):
        parse_source("screen:portal@HDMI-1", platform="linux")
