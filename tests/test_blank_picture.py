"""A live picture gone blank (covered lens, no signal, black screen) is reported, and its return too."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np

from stream_guard.sources.blank_picture import BLANK_AFTER_S, BlankPictureWatch, is_uniform
from stream_guard.types import Frame
from tests.conftest import run_cli
from tests.support.faces import astronaut_head, paste
from tests.support.stream_receiver import free_port
from tests.support.synth_video import make_test_clip, moving_pattern
from tests.support.ts_sender import UdpTsSender

RNG = np.random.default_rng(0)


def _noisy(level: tuple[int, int, int], sd: float, shape: tuple[int, int] = (720, 1280)) -> np.ndarray:
    picture = np.array(level, np.float32) + RNG.normal(0, sd, (*shape, 3))
    return np.clip(picture, 0, 255).astype(np.uint8)


def test_flat_pictures_are_uniform_and_pictures_with_content_are_not() -> None:
    black, blue = _noisy((0, 0, 0), 2), _noisy((16, 16, 180), 3)  # sensor noise; a "no signal" blue
    assert is_uniform(black) and is_uniform(blue)
    cursor = black.copy()
    cursor[300:324, 600:616] = 255  # a pointer on a black screen
    assert is_uniform(cursor)
    face = _noisy((20, 20, 20), 2)  # a face in a dark room
    paste(face, (astronaut_head() * 0.4).astype(np.uint8), (640, 360), 300)
    assert not is_uniform(face)
    assert not is_uniform(moving_pattern(640, 360)(0))


def _frame(image: np.ndarray, t: float) -> Frame:
    return Frame(image, 0, t, t, "test")


def test_blank_is_said_once_after_a_while_and_its_end_with_how_long() -> None:
    watch = BlankPictureWatch()
    black, content = _noisy((0, 0, 0), 1, (90, 160)), moving_pattern(160, 90)(3)
    times = np.arange(0, 12, 0.1)
    changes = [(t, watch.update(_frame(black if 1 <= t < 9 else content, t))) for t in times]
    said = [(round(t, 1), change) for t, change in changes if change]
    assert said == [(1.0 + BLANK_AFTER_S, "blank"), (9.0, "back")]
    assert abs(watch.blank_for_s - 8.0) < 0.01
    # a short blank (a cut through black) is not reported
    watch.reset()
    assert not any(watch.update(_frame(black if 20 <= t < 23 else content, t)) for t in np.arange(20, 30, 0.1))


def test_a_live_stream_gone_black_is_an_event_and_so_is_its_return(tmp_path: Path, placeholder_model: Path) -> None:
    fps, black_s = 10, 10.0  # the watcher joins a few seconds into the black (model loading; UDP)
    pattern = moving_pattern(320, 180)

    def draw(i: int) -> np.ndarray:
        return np.zeros((180, 320, 3), np.uint8) if i < black_s * fps else pattern(i)

    clip = make_test_clip(tmp_path / "black_then_picture.mp4", seconds=black_s + 4, width=320, height=180, fps=fps,
                          draw=draw)
    sender = UdpTsSender(clip, free_port(socket.SOCK_DGRAM))
    sender.start()
    events = tmp_path / "events.jsonl"
    try:
        result = run_cli("watch", sender.url, "--model", str(placeholder_model), "--events", str(events),
                         "--max-frames", str(int((black_s + 3) * fps)))
    finally:
        sender.stop()
    assert result.returncode == 0, result.stderr
    states = [(r["state"], r["detail"], r["downtime_s"]) for r in map(json.loads, events.read_text().splitlines())
              if r["type"] == "source"]
    blank = [s for s in states if s[0] == "blank"]
    back = [s for s in states if s[1] == "the picture is back"]
    assert len(blank) == 1 and "one flat colour" in blank[0][1], states
    assert len(back) == 1 and back[0][0] == "connected" and 1.5 < back[0][2] < black_s + 0.5
    assert states.index(blank[0]) < states.index(back[0])
    assert "blank" in result.stderr  # said in the log too, as a warning
