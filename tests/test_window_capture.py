"""``window:TITLE``: one application window of a real X display (Xvfb), found by its title with
python-xlib and captured by PyAV's x11grab, followed when it moves, read again when it is
resized, waited for when it is closed; and the errors a user sees."""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from stream_guard.errors import ConfigError, SourceNotFoundError
from stream_guard.gui.sources import source_choices
from stream_guard.sources import parse_source
from stream_guard.sources.x11_display import X11Window, XDisplay
from stream_guard.sources.x11_targets import choose_window
from tests.conftest import run_cli
from tests.support.x11_windows import HEAD_AT, TkWindow, face_centres, watch
from tests.support.xvfb import running_xvfb

HEAD_CENTRE = (HEAD_AT[0] + 130, HEAD_AT[1] + 150)


@pytest.fixture
def display(xvfb: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DISPLAY", f":{xvfb}")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    yield f":{xvfb}"


@pytest.fixture
def managed_display(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A display of its own with a window manager (openbox: reparenting, EWMH), as on a desktop."""
    if shutil.which("openbox") is None or shutil.which("Xvfb") is None:
        pytest.skip("not installed: openbox or Xvfb (tools/run_tests.sh installs them)")
    from Xlib import display as xdisplay

    with running_xvfb(tmp_path / "xvfb.log") as number:
        name = f":{number}"
        monkeypatch.setenv("DISPLAY", name)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
        manager = subprocess.Popen(["openbox", "--sm-disable"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        x = xdisplay.Display(name)
        try:
            check = x.intern_atom("_NET_SUPPORTING_WM_CHECK")
            deadline = time.monotonic() + 15
            while x.screen().root.get_full_property(check, 0) is None:
                assert time.monotonic() < deadline, "openbox did not start"
                time.sleep(0.1)
            yield name
        finally:
            x.close()
            manager.terminate()
            manager.wait(timeout=10)


def _near_the_head(centres: list[tuple[float, float]]) -> bool:
    return len(centres) >= 5 and all(abs(x - HEAD_CENTRE[0]) < 40 and abs(y - HEAD_CENTRE[1]) < 50
                                     for x, y in centres)


def test_a_window_found_by_part_of_its_title_is_captured_wherever_it_is_moved(
        display: str, placeholder_model: Path) -> None:
    with TkWindow("Weekly call with Alice - Meet", "640x480+100+50") as window:
        summary, results, _ = watch("window:alice", placeholder_model, 75, window, (1.0, "geometry +700+420"))
    assert summary.error is None and summary.frames_read == 75
    assert {(r.frame.width, r.frame.height) for r in results} == {(640, 480)}
    assert _near_the_head(face_centres(results[:15])) and _near_the_head(face_centres(results[-15:]))


def test_under_a_window_manager_the_window_is_followed_and_waited_for_when_minimised(
        managed_display: str, placeholder_model: Path) -> None:
    with TkWindow("Weekly call with Alice - Meet", "640x480+100+50") as window:
        summary, results, events = watch("window:alice", placeholder_model, 90, window, (0.7, "geometry +600+300"),
                                        (1.4, "minimise"), (2.4, "restore"))
    assert summary.error is None and summary.frames_read == 90
    assert {(r.frame.width, r.frame.height) for r in results} == {(640, 480)}  # the window, not its frame
    details = [e["detail"] for e in events if e["state"] == "reconnecting"]
    assert details and details[0].endswith(": the window was minimised or hidden")
    assert _near_the_head(face_centres(results[:15])) and _near_the_head(face_centres(results[-15:]))


def test_a_resized_window_is_read_again_at_its_new_size(display: str, placeholder_model: Path) -> None:
    with TkWindow("Call with Alice", "640x480+100+50") as window:
        summary, results, events = watch("window:Call with Alice", placeholder_model, 150, window,
                                        (0.5, "title Call with Bob"),  # the same window, whatever its title
                                        (1.0, "geometry 800x560"), (3.0, "geometry 560x400"))
    assert summary.error is None and summary.frames_read == 150
    sizes = [(r.frame.width, r.frame.height) for r in results]
    changes = [size for i, size in enumerate(sizes) if i == 0 or size != sizes[i - 1]]
    assert changes == [(640, 480), (800, 560), (560, 400)]
    details = [e["detail"] for e in events if e["state"] == "reconnecting"]
    assert len(details) == 2
    assert details[0].endswith("the window is now 800x560: reading it again at that size")  # held for a second
    assert details[1].endswith("the window shrank to 560x400: reading it again at that size")  # FFmpeg failed
    assert _near_the_head(face_centres(results[-15:]))


def test_a_closed_window_is_waited_for_and_captured_again_when_it_is_back(
        display: str, placeholder_model: Path) -> None:
    back = TkWindow("Call with Alice", "600x440+200+100")  # the call's window opened again, 1.5 s later
    opener = threading.Timer(2.5, back.__enter__)
    with TkWindow("Call with Alice", "640x480+100+50") as first, TkWindow("Terminal", "300x200+900+50"):
        opener.start()
        try:
            summary, results, events = watch("window:alice", placeholder_model, 90, first, (1.0, "close"))
        finally:
            opener.join()
            back.__exit__()
    assert summary.error is None and summary.frames_read == 90
    sizes = [(r.frame.width, r.frame.height) for r in results]
    assert sizes[0] == (640, 480) and sizes[-1] == (600, 440)
    details = [e["detail"] for e in events if e["state"] == "reconnecting"]
    assert details[0].endswith(": the window was closed")
    assert any("no window titled like 'alice'" in d and '"Terminal" 300x200' in d for d in details[1:])


def test_a_window_partly_off_the_screen_is_waited_for_without_flapping(display: str, placeholder_model: Path) -> None:
    """x11grab cannot read a window that is partly off the screen: it failed as it opened, with "Permission
    denied", and the source flapped between connected and reconnecting four times a second. The failure
    now says why, the back-off grows as for any outage, and the window is read once it is moved back."""
    with TkWindow("Call with Alice", "640x480+1200+100") as window:  # 240 px past the 1600 px screen's edge
        summary, results, events = watch("window:alice", placeholder_model, 30, window, (4.0, "geometry +100+100"))
    assert summary.error is None and summary.frames_read == 30
    dropped = [e for e in events if e["state"] == "reconnecting"]
    assert dropped and all(e["detail"].endswith("the window is partly off the screen, which x11grab cannot read: "
                                                "move it all onto the screen") for e in dropped), dropped
    assert [e["attempt"] for e in dropped] == list(range(1, len(dropped) + 1))  # one outage, backing off
    assert len(dropped) <= 8, dropped  # 4 s at 0.25, 0.5, then 1 s apart, each open taking its time
    connected = [e for e in events if e["state"] == "connected"]
    assert len(connected) == 2 and connected[-1]["attempt"] == len(dropped), events  # the start, and once back
    assert _near_the_head(face_centres(results[-15:]))


def test_the_runs_own_window_is_never_taken_for_the_one_watched(display: str, placeholder_model: Path) -> None:
    """``--show``'s window is titled "stream_guard - window 'alice'": once the call's window is closed,
    it must not be captured instead (a picture of itself, ever deeper)."""
    back = TkWindow("Call with Alice", "600x440+200+100")
    opener = threading.Timer(3.0, back.__enter__)
    with TkWindow("Call with Alice", "640x480+100+50") as first:
        opener.start()
        try:
            summary, results, events = watch("window:alice", placeholder_model, 90, first, (1.0, "close"), show=True)
        finally:
            opener.join()
            back.__exit__()
    assert summary.error is None and summary.frames_read == 90
    sizes = [(r.frame.width, r.frame.height) for r in results]
    switch = sizes.index((600, 440))
    assert set(sizes[:switch]) == {(640, 480)} and set(sizes[switch:]) == {(600, 440)}
    assert sum(e["state"] == "connected" for e in events) == 2  # the start, then the window that came back


def test_a_minimised_window_is_waited_for(display: str, placeholder_model: Path) -> None:
    with TkWindow("Call with Alice", "640x480+100+50") as window:
        summary, results, events = watch("window:alice", placeholder_model, 60, window,
                                        (0.7, "minimise"), (2.0, "restore"))
    assert summary.error is None and summary.frames_read == 60
    details = [e["detail"] for e in events if e["state"] == "reconnecting"]
    assert details and details[0].endswith(": the window was minimised or hidden")
    assert _near_the_head(face_centres(results[-15:]))


def test_no_window_or_several_with_that_title_is_one_clear_error(display: str, placeholder_model: Path) -> None:
    with TkWindow("Alice (camera)", "320x240+0+0"), TkWindow("Alice (screen)", "320x240+400+0"):
        missing = run_cli("watch", "window:Bob", "--model", str(placeholder_model), "--max-frames", "3")
        several = run_cli("watch", "window:alice", "--model", str(placeholder_model), "--max-frames", "3")
        chosen = run_cli("watch", "window:Alice (screen)", "--model", str(placeholder_model), "--max-frames", "3")
    for result in (missing, several):
        assert result.returncode == 3 and "Traceback" not in result.stderr
    assert missing.stderr.strip().splitlines()[-1].startswith(
        f"stream-guard: error: no window titled like 'Bob' on X display {display}; windows there: 0x")
    last = several.stderr.strip().splitlines()[-1]
    assert last.startswith(f"stream-guard: error: 2 windows titled like 'alice' on X display {display}: 0x")
    assert '"Alice (camera)" 320x240' in last and last.endswith("give more of the title, or the window's id "
                                                               "(window:0x...)")
    assert chosen.returncode == 0, chosen.stderr


def test_a_window_is_also_found_by_its_id(display: str, placeholder_model: Path) -> None:
    with TkWindow("Call with Alice", "400x300+10+10"):
        x = XDisplay(display)
        try:
            (window,) = [w for w in x.windows() if w.title == "Call with Alice"]
        finally:
            x.close()
        result = run_cli("watch", f"window:{window.id:#x}", "--model", str(placeholder_model), "--max-frames", "3")
        gone = run_cli("watch", "window:0x7ffffff", "--model", str(placeholder_model), "--max-frames", "3")
        decimal = run_cli("watch", f"window:0{window.id}", "--model", str(placeholder_model), "--max-frames", "3")
    assert result.returncode == 0 and decimal.returncode == 0, result.stderr + decimal.stderr  # as xdotool prints it
    assert gone.returncode == 3 and gone.stderr.strip().splitlines()[-1] == \
        f"stream-guard: error: no window 0x7ffffff on X display {display}"
    with TkWindow("2024", "320x240+10+10"):  # a title that is a number, as the desktop app lists it
        assert "window:2024" in source_choices()
        numbered = run_cli("watch", "window:2024", "--model", str(placeholder_model), "--max-frames", "3")
    assert numbered.returncode == 0, numbered.stderr


def test_the_desktop_app_offers_the_open_windows(display: str, tmp_path: Path) -> None:
    with (TkWindow("Call with Alice", "320x240+0+0"), TkWindow("Notes", "200x200+400+0"),
          TkWindow("Notes", "200x200+700+0"), TkWindow("stream_guard", "300x200+0+500")):
        choices = source_choices("linux", tmp_path)  # not the app's own window
    assert choices[:3] == ["screen", "demo", "window:Call with Alice"]
    assert len(choices) == 5 and all(c.startswith("window:0x") for c in choices[3:])  # one title, two windows
    assert source_choices("win32", tmp_path) == ["webcam:0", "screen", "demo"]


def test_doctor_counts_the_windows_it_could_capture(display: str) -> None:
    with TkWindow("Call with Alice", "320x240+0+0"), TkWindow("Notes", "200x200+400+0"):
        rows = [line for line in run_cli("doctor").stdout.splitlines() if "screen capture" in line]
    assert rows == [f"[     ok] screen capture   X11 display {display} (x11grab); 1 monitor(s) (screen); "
                    "window:TITLE sees 2 application window(s)"]


def test_the_exact_title_wins_over_titles_that_contain_it() -> None:
    windows = [X11Window(1, "Zoom", 800, 600), X11Window(2, "Zoom Meeting", 1280, 720),
               X11Window(3, "zoom meeting notes - Editor", 900, 700)]
    assert choose_window(windows, "zoom", ":0").id == 1
    assert choose_window(windows, "Zoom Meeting", ":0").id == 2
    assert choose_window(windows, "notes", ":0").id == 3
    with pytest.raises(SourceNotFoundError, match="2 windows titled like 'meeting'"):
        choose_window(windows, "meeting", ":0")


def test_where_window_capture_is_not_possible_the_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":5")
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    with pytest.raises(ConfigError, match="use `screen` and pick the window in the desktop's share dialog"):
        parse_source("window:alice", platform="linux")
    monkeypatch.delenv("WAYLAND_DISPLAY")
    spec = parse_source("window:alice", platform="linux")
    assert (spec.url, spec.format, spec.window, spec.is_live) == (":5", "x11grab", "alice", True)
    with pytest.raises(ConfigError, match="not supported on platform 'darwin'"):
        parse_source("window:alice", platform="darwin")
    with pytest.raises(ConfigError, match="needs the window's title"):
        parse_source("window:", platform="linux")
    windows = parse_source("window:Alice - Zoom", platform="win32")  # gdigrab finds it by its whole title
    assert (windows.url, windows.format) == ("title=Alice - Zoom", "gdigrab")
    monkeypatch.delenv("DISPLAY")
    with pytest.raises(ConfigError, match="window capture needs an X display"):
        parse_source("window:alice", platform="linux")


@pytest.mark.parametrize("source", ["window:bob", "screen", "screen@640x480+100+100"])
def test_an_x_display_that_goes_away_is_a_dropped_source_not_a_crash(source: str, tmp_path: Path,
                                                                     placeholder_model: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The X server dies mid-run (the user logged out, a remote desktop closed): the capture thread crashed
    with python-xlib's traceback while closing the dead connection, and the whole screen or a rectangle of
    it went on being judged on x11grab's last picture for ever."""
    import json
    import signal
    import sys

    from tests.conftest import REPO

    if shutil.which("Xvfb") is None:
        pytest.skip("not installed: Xvfb (tools/run_tests.sh installs it)")
    events = tmp_path / "ev.jsonl"
    servers: list[subprocess.Popen] = []
    with running_xvfb(tmp_path / "xvfb.log", started=servers.append) as number:
        monkeypatch.setenv("DISPLAY", f":{number}")
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        with TkWindow("Call with Bob", "640x480+100+100"):
            proc = subprocess.Popen([sys.executable, "-m", "stream_guard", "watch", source, "--events",
                                     str(events), "--model", str(placeholder_model)], cwd=REPO,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 60
                while not (events.exists() and '"type":"track"' in events.read_text()):
                    assert proc.poll() is None and time.monotonic() < deadline, "the run did not get going"
                    time.sleep(0.2)
                servers[0].kill()  # the display is gone, its clients' connections with it
                time.sleep(5)
                proc.send_signal(signal.SIGINT)
                _, stderr = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    assert "Traceback" not in stderr and "crashed" not in stderr, stderr
    assert proc.returncode == 130, stderr
    dropped = [r for r in map(json.loads, events.read_text().splitlines())
               if r["type"] == "source" and r["state"] == "reconnecting"]
    assert dropped and "X display" in dropped[0]["detail"], dropped
