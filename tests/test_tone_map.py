"""HDR video (phones record HLG, streaming HDR is PQ) is read as the SDR pictures the detector knows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream_guard.sources import PyAVSource, parse_source
from tests.conftest import run_cli
from tests.support.faces import one_face_moving
from tests.support.hdr_video import HLG, PQ, pq_signal, write_hdr_clip, write_switching_clip
from tests.support.synth_video import make_test_clip
from tools import hdr_copy

SIZE = (64, 96)
# BT.2408's reference levels: both transfers put an 18 % grey card at 38 % of the signal, and the HDR
# reference white (203 cd/m², SDR's white) at 75 % (HLG) and 58 % (PQ)
GREY, WHITE = {HLG: 0.38, PQ: 0.38}, {HLG: 0.75, PQ: float(pq_signal(203.0))}
# what SDR shows for them: 18 % grey ~ 26 cd/m² of 203 through BT.1886's gamma, white rolled off by the shoulder
SDR_GREY, SDR_WHITE = 255 * (26 / 203) ** (1 / 2.4), 247


def _flat(level: float) -> np.ndarray:
    return np.full((*SIZE, 3), level)


def _read(path: Path, tone_map: bool = True) -> list[np.ndarray]:
    source = PyAVSource(parse_source(str(path)), tone_map=tone_map)
    source.open()
    try:
        return [frame.image for frame in source.frames()]
    finally:
        source.close()


@pytest.mark.parametrize("transfer", [HLG, PQ])
def test_reference_levels_come_out_where_sdr_has_them(tmp_path: Path, transfer: int) -> None:
    clip = write_hdr_clip(tmp_path / "hdr.mp4", [_flat(GREY[transfer]), _flat(WHITE[transfer]), _flat(1.0)], transfer)
    grey, white, peak = (image.reshape(-1, 3).mean(axis=0) for image in _read(clip))
    assert grey == pytest.approx([SDR_GREY] * 3, abs=3)
    assert white == pytest.approx([SDR_WHITE] * 3, abs=3)
    assert peak == pytest.approx([255] * 3, abs=1)  # the brightest highlight is white, not a clipped wrap
    as_is = _read(clip, tone_map=False)[1].reshape(-1, 3).mean(axis=0)
    assert (as_is < SDR_WHITE - 40).all()  # read as SDR, HDR's white is a dull grey: what the mapping fixes


def test_wide_gamut_red_comes_back_as_sdr_red(tmp_path: Path) -> None:
    # BT.709's red at SDR white, expressed in BT.2020 primaries (PQ, so light is per channel)
    red_2020 = np.array([0.6274, 0.0691, 0.0164]) * 203.0
    clip = write_hdr_clip(tmp_path / "red.mp4", [np.broadcast_to(pq_signal(red_2020), (*SIZE, 3)).copy()], PQ)
    (image,) = _read(clip)
    assert image.reshape(-1, 3).mean(axis=0) == pytest.approx([SDR_WHITE, 0, 0], abs=6)
    (as_is,) = _read(clip, tone_map=False)
    r, g, b = as_is.reshape(-1, 3).mean(axis=0)
    assert g > 40 and b > 40  # read as BT.709, the same red is washed out towards grey


def test_the_user_is_told_and_can_turn_it_off(tmp_path: Path) -> None:
    clip = write_hdr_clip(tmp_path / "hlg.mp4", [_flat(0.5)] * 3, HLG)
    mapped = run_cli("-v", "watch", str(clip))
    assert mapped.returncode == 0 and any("HDR video (HLG transfer): tone-mapped" in line
                                          for line in mapped.stderr_lines), mapped.stderr
    as_is = run_cli("watch", str(clip), "--tone-map", "off")
    assert as_is.returncode == 0 and any("without tone mapping (--tone-map off)" in line
                                         for line in as_is.stderr_lines), as_is.stderr
    sdr = run_cli("-v", "watch", str(make_test_clip(tmp_path / "sdr.mp4", seconds=0.5, width=96, height=64, fps=10)))
    assert sdr.returncode == 0 and "HDR" not in sdr.stderr


def test_a_stream_that_switches_between_sdr_and_hdr_is_read_frame_by_frame(tmp_path: Path) -> None:
    """A broadcast's SDR programme, then an HLG one, then SDR again: each frame by its own transfer."""
    level = WHITE[HLG]  # HLG's reference white, the same signal an SDR frame shows as a light grey
    clip = write_switching_clip(tmp_path / "broadcast.h264", [([_flat(level)] * 4, 1), ([_flat(level)] * 4, HLG),
                                                              ([_flat(level)] * 4, 1)])
    means = [image.mean() for image in _read(clip)]
    sdr_grey = 255 * level
    assert means == pytest.approx([sdr_grey] * 4 + [SDR_WHITE] * 4 + [sdr_grey] * 4, abs=3)
    told = run_cli("-v", "watch", str(clip))
    assert told.returncode == 0, told.stderr
    assert any("HDR video (HLG transfer) from frame 4 on: tone-mapped" in line for line in told.stderr_lines)
    assert any("SDR video from frame 8 on: read as it is" in line for line in told.stderr_lines), told.stderr


@pytest.mark.parametrize("transfer", ["hlg", "pq"])
def test_an_sdr_clip_copied_as_hdr_reads_back_as_itself(tmp_path: Path, transfer: str) -> None:
    """tools.hdr_copy grades SDR into HDR as BT.2408 does; tone mapping is its inverse, up to the shoulder."""
    sdr = make_test_clip(tmp_path / "sdr.mp4", seconds=0.5, width=160, height=96, fps=10,
                         draw=one_face_moving(160, 96, face_px=60))
    hdr = tmp_path / "hdr.mp4"
    assert hdr_copy.main([str(sdr), str(hdr), "--transfer", transfer, "--crf", "0"]) == 0
    original = np.stack(_read(sdr)).astype(float)
    mapped, as_is = (np.stack(_read(hdr, tone_map)).astype(float) for tone_map in (True, False))
    assert mapped.shape == original.shape
    assert np.abs(mapped - original).mean() < 2.5  # measured 1.2-1.6 levels
    assert np.abs(as_is - original).mean() > 8  # read as SDR: 12-38


def test_hdr_copy_refuses_what_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    clip = make_test_clip(tmp_path / "sdr.mp4", seconds=0.2, width=64, height=48, fps=10)
    out, nowhere = tmp_path / "out.mp4", tmp_path / "missing" / "out.mp4"
    for source, target, named in ((tmp_path / "missing.mp4", out, "missing.mp4"), (text, out, "notes.txt"),
                                  (clip, nowhere, str(nowhere))):
        assert hdr_copy.main([str(source), str(target)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and error.startswith("hdr_copy: error:") and named in error, error
