"""Faces cut off by the frame's edge: tracked, drawn, but not judged while a quarter of the face is gone."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_guard.analysis import CUT_OFF_SHARE
from stream_guard.config import AnalysisOptions, ModelOptions, RunConfig, SourceOptions
from stream_guard.faces.crop import share_beyond_frame
from stream_guard.outputs.overlay import COLOURS, NOT_JUDGED_COLOUR, draw_face
from stream_guard.pipeline import Pipeline
from stream_guard.types import FaceResult, FrameResult, NotJudged, TrackState, Verdict
from tests.conftest import run_cli
from tests.support.faces import astronaut_head, paste
from tests.support.synth_video import make_test_clip

WIDTH, HEIGHT, FRAMES = 640, 360, 120


@pytest.fixture(scope="module")
def rising_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A head that sits still for a second, rises for two until about a third of its face is past the
    frame's top edge (someone standing up in front of a webcam), and stays there for a second."""
    head, background = astronaut_head(), np.full((HEIGHT, WIDTH, 3), 80, np.uint8)
    end_y = 45.0  # the picture's centre; its face is then about a third past the top edge

    def draw(i: int) -> np.ndarray:
        frame = background.copy()
        y = HEIGHT / 2 - min(1.0, max(0, i - 30) / 60) * (HEIGHT / 2 - end_y)
        paste(frame, head, (WIDTH / 2, y), 300)
        return frame

    path = tmp_path_factory.mktemp("clips") / "rising.mp4"
    return make_test_clip(path, seconds=FRAMES / 30, width=WIDTH, height=HEIGHT, fps=30, draw=draw)


def test_share_beyond_frame_is_the_largest_share_past_one_edge() -> None:
    assert share_beyond_frame(np.array([10, 10, 110, 60]), 200, 100) == 0.0
    assert share_beyond_frame(np.array([-25, 10, 75, 60]), 200, 100) == pytest.approx(0.25)  # a quarter past the left
    assert share_beyond_frame(np.array([150, 80, 250, 120]), 200, 100) == pytest.approx(0.5)  # half past the right
    assert share_beyond_frame(np.array([20, -10, 60, 30]), 200, 100) == pytest.approx(0.25)  # a quarter past the top


def test_a_face_leaving_the_frame_is_judged_until_a_quarter_of_it_is_gone(rising_clip: Path,
                                                                          placeholder_model: Path) -> None:
    results: list[FrameResult] = []
    config = RunConfig(source=SourceOptions(str(rising_clip)), model=ModelOptions(model_dir=placeholder_model),
                       analysis=AnalysisOptions())
    Pipeline(config, on_result=results.append).run()
    faces = [(f, share_beyond_frame(f.box, WIDTH, HEIGHT)) for r in results for f in r.faces
             if f.state is TrackState.CONFIRMED]
    inside = [f for f, share in faces if share < CUT_OFF_SHARE]
    cut = [f for f, share in faces if share >= CUT_OFF_SHARE]
    assert len(inside) >= 30 and len(cut) >= 5, (len(inside), len(cut))  # the detector still finds it half gone
    assert sum(f.scored for f in inside) >= 5 and not any(f.not_judged for f in inside)
    assert all(f.not_judged is NotJudged.CUT_OFF and not f.scored for f in cut)
    # it keeps what it was judged before it went: the score stays as the last judged frame left it
    last_judged = [f for f in inside if f.score is not None][-1]
    assert {f.score for f in cut} == {last_judged.score}
    assert len({f.track_id for f, _ in faces}) == 1


def test_a_face_cut_off_is_drawn_grey_with_its_reason_and_last_verdict() -> None:
    image = np.zeros((120, 160, 3), np.uint8)
    face = FaceResult(track_id=5, state=TrackState.CONFIRMED, box=np.array([-30, 20, 50, 100], np.float32),
                      detection_score=0.9, keypoints=np.zeros((6, 2), np.float32), raw_score=0.2, score=0.2,
                      verdict=Verdict.REAL, scored=False, verdict_changed=False, samples=4,
                      not_judged=NotJudged.CUT_OFF)
    draw_face(image, face)
    colours = {tuple(int(v) for v in px) for px in image.reshape(-1, 3)}
    assert NOT_JUDGED_COLOUR in colours
    assert not colours & set(COLOURS.values())  # no verdict colour, no score bar


def test_scan_reports_a_picture_whose_face_is_cut_off(placeholder_model: Path, tmp_path: Path) -> None:
    picture = np.full((HEIGHT, WIDTH, 3), 80, np.uint8)
    paste(picture, astronaut_head(), (WIDTH / 2, 50), 300)  # a third of the face above the top edge
    cv2.imwrite(str(tmp_path / "cut.png"), picture[:, :, ::-1])
    done = run_cli("scan", str(tmp_path / "cut.png"), "--model", str(placeholder_model),
                   "--report", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads((tmp_path / "r" / "report.json").read_text())["files"]
    assert (entry["verdict"], entry["faces_too_small"], entry["faces_cut_off"]) == ("no-face", 0, 1)
    assert "no face judged (1 cut off by the frame&#x27;s edge)" in (tmp_path / "r" / "report.html").read_text()
