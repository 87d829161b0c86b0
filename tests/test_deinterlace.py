"""Interlaced video is deinterlaced (bwdif) before analysis, without losing or reordering a frame."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from stream_guard.sources import PyAVSource, parse_source
from tests.conftest import run_cli
from tests.support.synth_video import make_test_clip

WIDTH, HEIGHT, FPS, FRAMES = 320, 240, 25, 25


def _scene(field: int) -> np.ndarray:
    """A bright bar moving 6 px a field over a dark background."""
    rgb = np.full((HEIGHT, WIDTH, 3), 50, np.uint8)
    x = 20 + 6 * field
    rgb[60:180, x:x + 40] = 220
    return rgb


def _woven(i: int) -> np.ndarray:
    """Frame ``i`` as an interlaced camera takes it: even lines from one field, odd lines from the next."""
    frame = _scene(2 * i)
    frame[1::2] = _scene(2 * i + 1)[1::2]
    return frame


def _combing(rgb: np.ndarray) -> float:
    """Mean distance of each line from the mean of its neighbours: comb teeth make it large."""
    g = rgb[..., 1].astype(np.float32)
    return float(np.abs(g[1:-1] - (g[:-2] + g[2:]) / 2).mean())


def _clip(tmp_path: Path, interlaced: bool) -> Path:
    return make_test_clip(tmp_path / f"clip_{interlaced}.mp4", seconds=FRAMES / FPS, width=WIDTH, height=HEIGHT,
                          fps=FPS, draw=_woven, interlaced=interlaced)


def _decoded_as_stored(path: Path) -> tuple[list[np.ndarray], list[float]]:
    with av.open(str(path)) as container:
        frames = list(container.decode(container.streams.video[0]))
    return [f.to_ndarray(format="rgb24") for f in frames], [float(f.time) for f in frames]


def _read(path: Path, deinterlace: str) -> tuple[list[np.ndarray], list[float]]:
    source = PyAVSource(parse_source(str(path)), deinterlace=deinterlace)
    source.open()
    try:
        frames = list(source.frames())
    finally:
        source.close()
    return [f.image for f in frames], [f.pts_s for f in frames]


def test_flagged_interlaced_frames_lose_their_comb_teeth_and_none_is_lost(tmp_path: Path) -> None:
    clip = _clip(tmp_path, interlaced=True)
    stored, stored_times = _decoded_as_stored(clip)
    images, times = _read(clip, "auto")
    assert len(images) == len(stored) == FRAMES  # the filter's one-frame hold is flushed at the end
    assert times == pytest.approx(stored_times)
    before = np.mean([_combing(rgb) for rgb in stored])
    after = np.mean([_combing(rgb) for rgb in images])
    assert before > 3 and after < before / 4, (before, after)


def test_progressive_frames_are_left_alone(tmp_path: Path) -> None:
    """``auto`` follows the stream's flags: woven pictures flagged progressive pass unchanged."""
    clip = _clip(tmp_path, interlaced=False)
    stored, _ = _decoded_as_stored(clip)
    images, _ = _read(clip, "auto")
    assert len(images) == FRAMES and all(np.array_equal(a, b) for a, b in zip(images, stored))


def test_always_and_off_override_the_flags(tmp_path: Path) -> None:
    unflagged, flagged = _clip(tmp_path, interlaced=False), _clip(tmp_path, interlaced=True)
    forced, _ = _read(unflagged, "always")
    kept, _ = _read(flagged, "off")
    stored, _ = _decoded_as_stored(flagged)
    assert len(forced) == FRAMES and np.mean([_combing(rgb) for rgb in forced]) < 1
    assert all(np.array_equal(a, b) for a, b in zip(kept, stored))


def test_watch_records_every_frame_deinterlaced(tmp_path: Path) -> None:
    clip = _clip(tmp_path, interlaced=True)
    combing = {}
    for mode in ("auto", "off"):
        out = tmp_path / f"out_{mode}.mp4"
        result = run_cli("watch", str(clip), "--out", str(out), "--deinterlace", mode, "-v")
        assert result.returncode == 0, result.stderr
        assert ("deinterlacing the frames the stream flags as interlaced" in result.stderr) == (mode == "auto")
        written, _ = _decoded_as_stored(out)
        assert len(written) == FRAMES
        combing[mode] = np.mean([_combing(rgb) for rgb in written])  # the HUD's text adds some of its own
    assert combing["auto"] < combing["off"] / 2, combing


def test_bad_deinterlace_mode_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("watch", str(_clip(tmp_path, interlaced=False)), "--deinterlace", "yes")
    assert result.returncode == 2
    assert "--deinterlace" in result.stderr and "Traceback" not in result.stderr
