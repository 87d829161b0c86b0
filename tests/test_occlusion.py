"""Occlusion maps (``scan --explain``): they find the pixels a score rests on, they score the very window
the pipeline scored, only the faces asked for get one, and the report shows them."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stream_guard.config import ModelOptions, RunConfig, SourceOptions
from stream_guard.faces.regions import LEFT_EYE, LIPS, RIGHT_EYE, FaceRegions
from stream_guard.file_analysis import analyse_file
from stream_guard.model.contract import ModelSpec
from stream_guard.model.occlusion import HIDDEN_REGIONS, Explaining, OcclusionExplainer, WindowSample
from stream_guard.model.scorer import FaceScorer
from stream_guard.paths import models_dir
from stream_guard.pipeline import build_explainer, load_model
from stream_guard.scan.runner import EXIT_FAKE_FOUND
from tests.conftest import run_cli
from tests.support.faces import one_face_moving, two_faces_passing
from tests.support.synth_video import make_test_clip
from tests.test_scan import _check_links

SIZE, GAIN = 112, 4.0
PROBE_BOX = (16, 32, 48, 64)  # rows 16-31, columns 48-63: grid cell (1, 3) of a 7x7 grid on 112 px


def _probe_model(folder: Path) -> ModelSpec:
    """A model whose logit is GAIN times the mean normalised pixel of PROBE_BOX: it rests on nothing else."""
    r0, r1, c0, c1 = PROBE_BOX
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
              (("starts", [r0, c0]), ("ends", [r1, c1]), ("axes", [2, 3]))]
    encoder = helper.make_graph(
        [helper.make_node("Slice", ["crops", "starts", "ends", "axes"], ["box"]),
         helper.make_node("ReduceMean", ["box"], ["embeddings"], axes=[2, 3], keepdims=0),
         ], "probe_encoder",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", 3])], consts)
    weights = numpy_helper.from_array(np.full((3, 1), GAIN / 3, np.float32), "w")
    temporal = helper.make_graph(
        [helper.make_node("ReduceMean", ["embeddings"], ["mean"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["mean", "w"], ["logits"])], "probe_temporal",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", "T", 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1])], [weights])
    folder.mkdir(parents=True, exist_ok=True)
    for name, graph in (("encoder.onnx", encoder), ("temporal.onnx", temporal)):
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(folder / name))
    spec = ModelSpec(folder=folder, name="probe", version="0", trained=False, encoder_path=folder / "encoder.onnx",
                     temporal_path=folder / "temporal.onnx", input_size=SIZE, mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5), crop_margin=0.25, embedding_dim=3, window=4, sample_hz=10.0,
                     threshold=0.5, calibration_a=1.0, calibration_b=0.0)
    spec.save()
    return spec


def _ring(centre: tuple[float, float], radius: float) -> np.ndarray:
    """468 landmarks: a round face oval there, its mouth and eyes shrunk to a point low in it."""
    angles = np.linspace(0, 2 * np.pi, 468, endpoint=False)
    points = np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], 1)
    points[list(LIPS + LEFT_EYE + RIGHT_EYE)] = (centre[0], centre[1] + 0.6 * radius)
    return points.astype(np.float32)


def test_the_map_finds_the_only_pixels_a_score_rests_on(tmp_path: Path) -> None:
    spec = _probe_model(tmp_path / "probe")
    explainer = OcclusionExplainer(FaceScorer(spec, ["CPUExecutionProvider"]),
                                   FaceRegions(None, (), (), SIZE, spec.crop_margin))  # type: ignore[arg-type]
    white = np.full((SIZE, SIZE, 3), 255, np.uint8)  # normalised +1 everywhere: logit GAIN
    window = [WindowSample(white, _ring((85.0, 85.0), 15.0))] * spec.window  # face far from the probe box
    result = explainer.explain(window)
    assert result.score == pytest.approx(1 / (1 + np.exp(-GAIN)), abs=1e-6)
    weights = result.grid_weights
    assert weights.shape == (7, 7)
    assert weights[1, 3] == pytest.approx(GAIN, abs=1e-4)  # hidden: mean grey, normalised 0, logit 0
    others = np.delete(weights.ravel(), 1 * 7 + 3)
    assert np.abs(others).max() < 1e-4
    assert set(result.regions) == set(HIDDEN_REGIONS)
    assert result.strongest == "background"
    assert float(result.weight(result.regions["background"])) == pytest.approx(GAIN, abs=1e-4)
    assert all(abs(float(result.weight(result.regions[n]))) < 1e-4 for n in HIDDEN_REGIONS if n != "background")

    # a face over the probe box: hiding the face core now takes the score away instead
    result = explainer.explain([WindowSample(white, _ring((56.0, 24.0), 22.0))] * spec.window)
    assert result.strongest == "core"
    assert float(result.weight(result.regions["core"])) == pytest.approx(GAIN, abs=1e-4)
    assert float(result.weight(result.regions["background"])) == pytest.approx(0.0, abs=1e-4)


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_clip(tmp_path_factory.mktemp("occlusion") / "face.mp4", seconds=2.0, width=640, height=360,
                          draw=one_face_moving(640, 360, face_px=200))


@pytest.mark.parametrize("model", ["deepfake", "placeholder"])
def test_the_map_scores_the_very_window_the_pipeline_scored(face_clip: Path, placeholder_model: Path,
                                                           model: str) -> None:
    """The window is rebuilt from the frames (crop and face-mesh tracking): its score must be the pipeline's."""
    folder = models_dir() / model if model == "deepfake" else placeholder_model
    config = RunConfig(source=SourceOptions(spec="demo"), model=ModelOptions(model_dir=folder))
    analysis = analyse_file(face_clip, config, explaining=Explaining(build_explainer(config, load_model(config)),
                                                                    every_face=True))
    tracks = [t for t in analysis.tracks if t.scores]
    assert tracks and all(t.explanation is not None for t in tracks)
    for track in tracks:
        assert track.explanation.score == pytest.approx(track.peak_score, abs=1e-5)
        assert track.explanation.grid.shape == (7, 7)
        assert np.isfinite(track.explanation.grid_weights).all()


def test_only_the_faces_judged_fake_are_explained_unless_asked(face_clip: Path, placeholder_model: Path) -> None:
    config = RunConfig(source=SourceOptions(spec="demo"), model=ModelOptions(model_dir=placeholder_model,
                                                                            threshold=1.0))
    explainer = build_explainer(config, load_model(config))
    none_fake = analyse_file(face_clip, config, explaining=Explaining(explainer))
    assert [t for t in none_fake.tracks if t.scores] and all(t.explanation is None for t in none_fake.tracks)
    every = analyse_file(face_clip, config, explaining=Explaining(explainer, every_face=True))
    assert all(t.explanation is not None for t in every.tracks if t.scores)


def test_scan_explain_puts_the_maps_in_the_report(tmp_path: Path, placeholder_model: Path) -> None:
    clip = make_test_clip(tmp_path / "two_faces.mp4", seconds=2.0, width=640, height=360,
                          draw=two_faces_passing(n_frames=60))
    report = tmp_path / "rep"
    result = run_cli("scan", str(clip), "--report", str(report), "--model", str(placeholder_model),
                     "--threshold", "0", "--explain", timeout=300)
    assert result.returncode == EXIT_FAKE_FOUND, result.stderr
    tracks = json.loads((report / "report.json").read_text())["files"][0]["tracks"]
    assert len(tracks) == 2
    for track in tracks:
        explanation = track["explanation"]
        assert explanation["image"].startswith("explain/")
        picture = cv2.imread(str(report / explanation["image"]))
        assert picture is not None and picture.shape == (300, 720, 3) and picture.std() > 20
        assert set(explanation["region_scores"]) == set(HIDDEN_REGIONS)
        assert np.asarray(explanation["grid_weights"]).shape == (7, 7)
        assert explanation["window_score"] == pytest.approx(track["peak_score"], abs=1e-4)
    images = _check_links(report)
    assert {t["explanation"]["image"] for t in tracks} <= set(images)
    assert "rests on" in (report / "report.html").read_text()


def test_scan_explain_without_a_report_is_one_clear_error(tmp_path: Path, placeholder_model: Path) -> None:
    result = run_cli("scan", str(tmp_path), "--explain", "--model", str(placeholder_model))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr_lines == ["stream-guard: error: --explain needs --report DIR: its occlusion maps are "
                                   "pictures in the report"]
