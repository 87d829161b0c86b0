"""The Tk window sink, on a real X server (Xvfb), captured with PyAV's x11grab in the
same process: proof that the window and screen capture live together."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream_guard.errors import OutputError
from stream_guard.outputs.base import Sink
from stream_guard.outputs.window import NO_DISPLAY_MESSAGE, TkWindowSink, fit_size, ppm_bytes
from stream_guard.types import Frame, FrameResult, StreamInfo

from tests.support.xvfb import SCREEN
COLOURS = np.array([[220, 30, 30], [30, 200, 60], [40, 60, 220], [230, 220, 40]], np.uint8)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 test (Linux only)")


@pytest.fixture
def display(xvfb: int, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("DISPLAY", f":{xvfb}")
    return xvfb


def _quadrants(width: int, height: int, order: tuple[int, int, int, int] = (0, 1, 2, 3)) -> np.ndarray:
    """A test card: four solid quadrants, colours taken from COLOURS in ``order``."""
    image = np.empty((height, width, 3), np.uint8)
    hw, hh = width // 2, height // 2
    image[:hh, :hw], image[:hh, hw:] = COLOURS[order[0]], COLOURS[order[1]]
    image[hh:, :hw], image[hh:, hw:] = COLOURS[order[2]], COLOURS[order[3]]
    return image


def _result(image: np.ndarray, index: int = 0) -> FrameResult:
    frame = Frame(pixels=image, index=index, pts_s=index / 30.0, wallclock_s=time.monotonic(), source_id="test")
    return FrameResult(frame=frame, annotated=image, faces=(), detected=False, latency_ms=1.0, fps=30.0)


def _info(width: int, height: int) -> StreamInfo:
    return StreamInfo("test", width, height, 30.0, None, is_live=True)


def _shows_card(screen: np.ndarray, geometry: tuple[int, int, int, int], order: tuple[int, int, int, int]) -> bool:
    """Whether the four quadrant centres on screen have the card's colours."""
    x, y, w, h = geometry
    points = [(x + w // 4, y + h // 4), (x + 3 * w // 4, y + h // 4), (x + w // 4, y + 3 * h // 4), (x + 3 * w // 4, y + 3 * h // 4)]
    for (px, py), colour in zip(points, COLOURS[list(order)]):
        if np.abs(screen[py, px].astype(int) - colour).max() > 10:
            return False
    return True


def _capture_until(
    number: int, geometry: tuple[int, int, int, int], order: tuple[int, int, int, int], timeout: float = 5.0
) -> tuple[bool, np.ndarray]:
    """Grab the screen with x11grab until it shows the card (or time runs out)."""
    options = {"video_size": f"{SCREEN[0]}x{SCREEN[1]}", "draw_mouse": "0", "framerate": "30"}
    deadline = time.monotonic() + timeout
    with av.open(f":{number}", format="x11grab", options=options) as container:
        for frame in container.decode(video=0):
            screen = frame.to_ndarray(format="rgb24")
            if _shows_card(screen, geometry, order) or time.monotonic() > deadline:
                return _shows_card(screen, geometry, order), screen
    raise AssertionError("x11grab stopped delivering frames")


def _save_png(path: Path, screen: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(screen, cv2.COLOR_RGB2BGR))


@linux_only
def test_window_shows_frames_and_x11grab_captures_them(display: int, tmp_path: Path) -> None:
    sink = TkWindowSink(title="stream_guard test")
    assert isinstance(sink, Sink) and sink.name == "window" and not sink.lossless
    sink.open(_info(640, 360))
    try:
        assert sink.tk_root is not None
        sink.tk_root.geometry("+160+120")  # away from the origin, so the position check means something
        for index in range(3):
            sink.write(_result(_quadrants(640, 360), index))
        geometry = sink.window_geometry()
        assert geometry == (160, 120, 640, 360)
        shown, screen = _capture_until(display, geometry, (0, 1, 2, 3))
        _save_png(tmp_path / "window_first.png", screen)
        assert shown, f"card not on screen at {geometry}; see {tmp_path / 'window_first.png'}"
        assert screen[:120, :160].max() < 16, "nothing should be drawn outside the window"

        swapped = (3, 2, 1, 0)
        sink.write(_result(_quadrants(640, 360, swapped), 3))
        shown, screen = _capture_until(display, geometry, swapped)
        _save_png(tmp_path / "window_second.png", screen)
        assert shown, "the window did not update to the next frame"
    finally:
        sink.close()
    assert sink.tk_root is None and sink.window_geometry() is None
    sink.close()  # idempotent


@linux_only
def test_large_frames_are_scaled_to_fit(display: int, tmp_path: Path) -> None:
    sink = TkWindowSink(max_size=(960, 540))
    sink.open(_info(1920, 1080))
    try:
        sink.write(_result(_quadrants(1920, 1080)))
        geometry = sink.window_geometry()
        assert geometry is not None and geometry[2:] == (960, 540)
        shown, screen = _capture_until(display, geometry, (0, 1, 2, 3))
        _save_png(tmp_path / "window_scaled.png", screen)
        assert shown
    finally:
        sink.close()


@linux_only
def test_missing_display_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(OutputError) as caught:
        TkWindowSink().open(_info(640, 360))
    assert str(caught.value) == NO_DISPLAY_MESSAGE


@linux_only
def test_unreachable_display_is_an_output_error(monkeypatch: pytest.MonkeyPatch) -> None:
    number = next(n for n in range(59000, 59100) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    monkeypatch.setenv("DISPLAY", f":{number}")
    with pytest.raises(OutputError, match="no display"):
        TkWindowSink().open(_info(640, 360))


@linux_only
@pytest.mark.parametrize("how", ["window-manager-close", "key-q", "key-escape", "destroyed"])
def test_closing_the_window_calls_on_close_once(display: int, how: str) -> None:
    calls: list[str] = []
    sink = TkWindowSink(on_close=lambda: calls.append(how))
    sink.open(_info(320, 180))
    sink.write(_result(_quadrants(320, 180)))
    root = sink.tk_root
    assert root is not None
    if how == "window-manager-close":
        root.tk.call(root.protocol("WM_DELETE_WINDOW"))  # what the WM's close button runs
    elif how == "destroyed":
        root.destroy()
    else:
        root.focus_force()
        root.event_generate("<KeyPress>", keysym="q" if how == "key-q" else "Escape", when="tail")
    sink.write(_result(_quadrants(320, 180), 1))  # pumps the events; then a no-op
    sink.write(_result(_quadrants(320, 180), 2))
    assert calls == [how]
    assert sink.closed_by_user and sink.tk_root is None
    sink.close()
    assert calls == [how], "close() after a user close must not call on_close again"


@linux_only
def test_close_by_the_pipeline_does_not_call_on_close(display: int) -> None:
    calls: list[int] = []
    sink = TkWindowSink(on_close=lambda: calls.append(1))
    sink.open(_info(320, 180))
    sink.write(_result(_quadrants(320, 180)))
    sink.close()
    assert calls == [] and not sink.closed_by_user


@linux_only
def test_sink_runs_on_its_own_thread(display: int) -> None:
    """The pipeline drives each sink from a worker thread; Tk must live there."""
    errors: list[BaseException] = []

    def drive() -> None:
        sink = TkWindowSink()
        try:
            sink.open(_info(320, 180))
            for index in range(5):
                sink.write(_result(_quadrants(320, 180), index))
        except BaseException as e:  # reported to the main thread below
            errors.append(e)
        finally:
            sink.close()

    worker = threading.Thread(target=drive)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive() and errors == []


def test_ppm_and_fit_helpers() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert ppm_bytes(image) == b"P6 3 2 255\n" + image.tobytes()
    with pytest.raises(ValueError):
        ppm_bytes(image.astype(np.float32))
    assert fit_size(1920, 1080, (1280, 720)) == (1280, 720)
    assert fit_size(640, 360, (1280, 720)) == (640, 360)
    assert fit_size(1000, 2000, (1280, 720)) == (360, 720)
