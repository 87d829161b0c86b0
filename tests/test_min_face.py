"""The minimum face size (``--min-face``): faces smaller than it are tracked and drawn, but never
judged, because the model's scores there are noise (models/MODEL_CARD.md, face size)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream_guard.config import MIN_FACE_PX, AnalysisOptions, ModelOptions, RunConfig, SourceOptions
from stream_guard.outputs.overlay import COLOURS, NOT_JUDGED_COLOUR, draw_face
from stream_guard.pipeline import Pipeline
from stream_guard.types import FaceResult, FrameResult, NotJudged, TrackState, Verdict
from tests.conftest import run_cli
from tests.support.faces import one_face_moving
from tests.support.synth_video import make_test_clip


@pytest.fixture(scope="module")
def small_face_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A head small enough that the detector's box is about 36 px high (under the default minimum)."""
    path = tmp_path_factory.mktemp("clips") / "small_face.mp4"
    return make_test_clip(path, seconds=2.0, width=640, height=360, fps=30, draw=one_face_moving(640, 360, face_px=60))


def run(clip: Path, model: Path, **analysis) -> list[FrameResult]:
    results: list[FrameResult] = []
    config = RunConfig(source=SourceOptions(str(clip)), model=ModelOptions(model_dir=model),
                       analysis=AnalysisOptions(**analysis))
    Pipeline(config, on_result=results.append).run()
    return results


def test_faces_below_the_minimum_size_are_tracked_but_never_judged(small_face_clip: Path,
                                                                   placeholder_model: Path) -> None:
    faces = [f for r in run(small_face_clip, placeholder_model) for f in r.faces]
    heights = [float(f.box[3] - f.box[1]) for f in faces]
    assert len(faces) >= 40 and max(heights) < MIN_FACE_PX
    assert all(f.not_judged is NotJudged.TOO_SMALL and not f.scored and f.score is None
               and f.verdict is Verdict.UNCERTAIN for f in faces)

    every = [f for r in run(small_face_clip, placeholder_model, min_face_px=0) for f in r.faces]
    assert not any(f.not_judged for f in every)
    assert sum(f.scored for f in every) >= 10  # the same faces are judged once the minimum is lifted

    above = [f for r in run(small_face_clip, placeholder_model, min_face_px=min(heights) - 1) for f in r.faces]
    assert sum(f.scored for f in above) >= 10 and not any(f.not_judged for f in above)


def test_a_face_too_small_to_judge_is_drawn_grey_without_a_verdict() -> None:
    image = np.zeros((120, 160, 3), np.uint8)
    face = FaceResult(track_id=3, state=TrackState.CONFIRMED, box=np.array([40, 50, 70, 80], np.float32),
                      detection_score=0.9, keypoints=np.zeros((6, 2), np.float32), raw_score=0.9, score=0.9,
                      verdict=Verdict.FAKE, scored=False, verdict_changed=False, samples=4, not_judged=NotJudged.TOO_SMALL)
    draw_face(image, face)
    colours = {tuple(int(v) for v in px) for px in image.reshape(-1, 3)}
    assert NOT_JUDGED_COLOUR in colours
    assert not colours & set(COLOURS.values())  # no verdict colour, no score bar


def test_scan_reports_a_file_whose_faces_are_all_too_small(small_face_clip: Path, placeholder_model: Path,
                                                           tmp_path: Path) -> None:
    done = run_cli("scan", str(small_face_clip), "--model", str(placeholder_model), "--report", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads((tmp_path / "r" / "report.json").read_text())["files"]
    assert entry["verdict"] == "no-face" and entry["faces_too_small"] == 1
    assert "no face judged (1 below --min-face)" in (tmp_path / "r" / "report.html").read_text()

    judged = run_cli("scan", str(small_face_clip), "--model", str(placeholder_model), "--min-face", "0",
                     "--report", str(tmp_path / "all"))
    (entry,) = json.loads((tmp_path / "all" / "report.json").read_text())["files"]
    assert entry["verdict"] in ("real", "fake") and entry["faces_too_small"] == 0, judged.stderr

    bad = run_cli("scan", str(small_face_clip), "--min-face", "-3")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "argument --min-face: must be a face height in pixels" in bad.stderr_lines[-1]


def test_evaluate_lists_a_file_whose_faces_are_all_too_small(small_face_clip: Path, two_faces_clip: Path,
                                                             placeholder_model: Path, tmp_path: Path) -> None:
    for name, clip in (("small.mp4", small_face_clip), ("two.mp4", two_faces_clip)):
        (tmp_path / name).symlink_to(clip)
    (tmp_path / "MANIFEST.tsv").write_text("file\tlabel\nsmall.mp4\treal\ntwo.mp4\tfake\n")
    done = run_cli("evaluate", "--manifest", str(tmp_path / "MANIFEST.tsv"), "--model", str(placeholder_model),
                   "--json", str(tmp_path / "report.json"))
    assert done.returncode == 0, done.stderr
    assert f"no face judged (1 below --min-face): {tmp_path / 'small.mp4'}" in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert [(f["file"], f["faces_too_small"]) for f in report["no_face"]] == [(str(tmp_path / "small.mp4"), 1)]


def test_the_label_of_a_face_that_fills_the_frame_is_not_cut_by_its_top_edge() -> None:
    image = np.full((320, 320, 3), 200, np.uint8)
    face = FaceResult(track_id=1, state=TrackState.CONFIRMED, box=np.array([-35, -61, 351, 325], np.float32),
                      detection_score=0.8, keypoints=np.zeros((6, 2), np.float32), raw_score=0.9, score=0.91,
                      verdict=Verdict.FAKE, scored=True, verdict_changed=False, samples=5)
    draw_face(image, face)
    thick = 3  # the box's line along the frame's top edge
    red = np.all(np.abs(image[:, 5:150].astype(int) - COLOURS[Verdict.FAKE]) < 60, axis=2)
    text_rows = np.flatnonzero(red[thick:60].any(axis=1)) + thick
    assert text_rows.size and text_rows[0] >= thick + 2, text_rows  # a dark plate row above the glyphs
