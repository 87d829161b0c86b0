"""Screen capture (PyAV x11grab on a real Xvfb) and the Tk window output in the same process."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from stream_guard.config import ModelOptions, OutputOptions, RunConfig, SourceOptions
from stream_guard.pipeline import Pipeline
from stream_guard.types import FrameResult
from tests.conftest import run_cli

# A second process shows the astronaut's head in a Tk window at a fixed place on the screen.
FACE_WINDOW = textwrap.dedent("""
    import sys, tkinter as tk
    from tests.support.faces import astronaut_head
    from stream_guard.outputs.window import ppm_bytes
    root = tk.Tk()
    root.overrideredirect(True)
    root.geometry("+1300+640")
    image = tk.PhotoImage(data=ppm_bytes(astronaut_head()), format="PPM")
    tk.Label(root, image=image, borderwidth=0).pack()
    root.update()
    print("ready", flush=True)
    sys.stdin.read()
""")


@pytest.fixture
def face_on_screen(xvfb: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setenv("DISPLAY", f":{xvfb}")
    proc = subprocess.Popen([sys.executable, "-c", FACE_WINDOW], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield xvfb
    finally:
        proc.kill()
        proc.wait()


def test_screen_capture_with_window_output_in_one_process(face_on_screen: int, placeholder_model: Path) -> None:
    results: list[FrameResult] = []
    config = RunConfig(
        source=SourceOptions(f"screen::{face_on_screen}", max_frames=45),
        model=ModelOptions(model_dir=placeholder_model),
        outputs=OutputOptions(show=True),
    )
    summary = Pipeline(config, on_result=results.append).run()
    # the screen is a live source: a busy machine drops the oldest frames, none go unaccounted
    assert summary.frames_processed + summary.frames_dropped == summary.frames_read == 45
    assert summary.frames_processed >= 10 and summary.failed_outputs == ()
    assert results[0].frame.width == 1600 and results[0].frame.height == 1000
    # the face shown by the other process (head 260x300 at +1300+640) is found and tracked
    found = [f for r in results[-10:] for f in r.faces if f.state.value == "confirmed"
             if 1300 <= (f.box[0] + f.box[2]) / 2 <= 1560 and 640 <= (f.box[1] + f.box[3]) / 2 <= 940]
    assert len(found) >= 5
    assert len({f.track_id for f in found}) == 1


def test_a_screen_region_is_captured_and_faces_are_placed_in_it(face_on_screen: int, placeholder_model: Path) -> None:
    """Only the region is read: frames have its size and the face (head at +1300+640 on the
    screen) is found at its place within the region."""
    results: list[FrameResult] = []
    config = RunConfig(source=SourceOptions(f"screen::{face_on_screen}@640x480+960+520", max_frames=30),
                       model=ModelOptions(model_dir=placeholder_model))
    summary = Pipeline(config, on_result=results.append).run()
    assert summary.error is None and summary.frames_read == 30
    assert (results[0].frame.width, results[0].frame.height) == (640, 480)
    centres = [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for r in results[-10:] for f in r.faces]
    assert len(centres) >= 5
    # the head's centre on the screen is (1430, 790): in the region, (470, 270)
    assert all(abs(x - 470) < 40 and abs(y - 270) < 50 for x, y in centres)


def test_a_region_off_the_screen_is_one_clear_error(xvfb: int) -> None:
    result = run_cli("watch", f"screen::{xvfb}@640x480+1200+800", "--max-frames", "3")
    assert result.returncode == 3 and len(result.stderr_lines) == 1
    assert "640x480+1200+800" in result.stderr and "inside the screen" in result.stderr


def test_input_options_reach_ffmpeg_and_win_over_ours(xvfb: int, placeholder_model: Path) -> None:
    """x11grab at 30 fps and the whole screen, unless told otherwise with --input-option."""
    result = run_cli("watch", f"screen::{xvfb}", "--model", str(placeholder_model), "--max-frames", "3",
                     "--events", "-", "--input-option", "framerate=10", "--input-option", "video_size=320x240")
    assert result.returncode == 0, result.stderr
    start = json.loads(result.stdout.splitlines()[0])
    assert (start["type"], start["fps"], start["width"], start["height"]) == ("start", 10.0, 320, 240)


@pytest.mark.parametrize(("args", "message"), [
    (["--input-option", "framerate"], "is not KEY=VALUE"),
    (["--input-option", "=10"], "is not KEY=VALUE"),
    (["--input-option", "framerate=abc"], "cannot open (Invalid argument); check --input-option framerate"),
])
def test_bad_input_options_are_one_line(xvfb: int, args: list[str], message: str) -> None:
    result = run_cli("watch", f"screen::{xvfb}", "--max-frames", "3", *args)
    # argparse's usage lines come first for a malformed option; the error is the last line
    assert result.returncode in (2, 3) and message in result.stderr_lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_window_is_not_blamed_on_the_input_options(xvfb: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", f":{xvfb}")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    result = run_cli("watch", "window:no-such-call", "--max-frames", "3", "--input-option", "framerate=10")
    assert result.returncode == 3 and len(result.stderr_lines) == 1, result.stderr
    assert "no window titled like 'no-such-call'" in result.stderr and "--input-option" not in result.stderr


def test_the_demo_takes_no_input_options() -> None:
    result = run_cli("watch", "demo", "--max-frames", "3", "--input-option", "framerate=10")
    assert result.returncode == 2 and "does not apply to the demo" in result.stderr and len(result.stderr_lines) == 1
