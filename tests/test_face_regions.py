"""Face-region models at run time: the shipped face mesh on a real photo, the region masks the
pipeline builds from it, the model contract's ``regions`` and a file run with such a model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from stream_guard.errors import ModelError
from stream_guard.faces.crop import crop_face, crop_matrix, transform_points
from stream_guard.faces.detector import FaceDetector
from stream_guard.faces.landmarks import MODEL_FILE, FaceMesh
from stream_guard.faces.regions import LIPS, FaceRegions
from stream_guard.model.contract import REGION_NAMES, load_model_spec
from stream_guard.model.scorer import FaceScorer
from stream_guard.paths import bundled_model
from tests.conftest import run_cli

torch = pytest.importorskip("torch")

# Hand-annotated on skimage.data.astronaut() (as in test_face_detector.py): subject's right eye,
# left eye, nose tip, mouth centre.
ASTRO_POINTS = np.array([[203.0, 102.0], [247.0, 104.0], [223.0, 128.0], [224.0, 148.0]])
RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS, NOSE_TIP = (33, 133), (362, 263), 1


@pytest.fixture(scope="module")
def astronaut_face() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.ascontiguousarray(data.astronaut())
    dets = FaceDetector().detect(image)
    assert len(dets) == 1
    return image, dets.boxes[0], dets.keypoints[0]


def test_shipped_face_mesh_puts_eyes_nose_and_mouth_on_the_astronaut(astronaut_face) -> None:
    image, box, keypoints = astronaut_face
    points, score = FaceMesh(bundled_model(MODEL_FILE)).landmarks(image, box, keypoints)
    assert points.shape == (468, 2) and score > 0.9
    found = [points[list(RIGHT_EYE_CORNERS)].mean(0), points[list(LEFT_EYE_CORNERS)].mean(0), points[NOSE_TIP],
             points[list(LIPS)].mean(0)]
    width = box[2] - box[0]
    assert np.all(np.linalg.norm(np.array(found) - ASTRO_POINTS, axis=1) < 0.08 * width), found


def test_face_regions_are_masks_of_the_crop_the_pipeline_cuts(astronaut_face) -> None:
    image, box, keypoints = astronaut_face
    regions = FaceRegions(FaceMesh(bundled_model(MODEL_FILE)), ("mouth", "core"), (224, 28), 224, 0.25)
    (masks, small), _ = regions(image, box, keypoints)
    assert masks.shape == (2, 224, 224) and masks.dtype == np.float32 and small.shape == (2, 28, 28)
    assert 0.5 < (small[0].sum() / 28 ** 2) / (masks[0].sum() / 224 ** 2) < 2  # the same mouth, drawn smaller
    mouth, eye = transform_points(ASTRO_POINTS[[3, 0]], crop_matrix(box, 224, 0.25)).round().astype(int)
    assert masks[0][mouth[1], mouth[0]] == 1 and masks[0].sum() < 0.05 * 224 ** 2
    assert masks[1][eye[1] + 15, eye[0]] == 1  # the cheek under the eye is face core
    assert crop_face(image, box, 224, 0.25).shape == (224, 224, 3)


def test_the_mesh_tracks_a_face_from_its_last_landmarks_in_one_pass(astronaut_face) -> None:
    """Given the last landmarks moved with the face's box, one pass lands where two passes from the
    detector box do (MediaPipe's own tracking); a prior far off the face falls back to two passes."""
    from stream_guard.faces.regions import moved_with_box
    image, box, keypoints = astronaut_face
    mesh = FaceMesh(bundled_model(MODEL_FILE))
    reference, _ = mesh.landmarks(image, box, keypoints)
    shifted = np.ascontiguousarray(np.roll(image, (9, -7), axis=(0, 1)))  # the face moved 7 px left, 9 down
    new_box = box + np.array([-7, 9, -7, 9], np.float32)
    expected, _ = mesh.landmarks(shifted, new_box, keypoints + np.array([-7, 9], np.float32))
    tracked, score = mesh.landmarks(shifted, new_box, keypoints, prior=moved_with_box(reference, box, new_box))
    width = box[2] - box[0]
    assert score > 0.9 and np.abs(tracked - expected).mean() < 0.01 * width
    lost, score = mesh.landmarks(image, box, keypoints, prior=reference + np.array([300, 300], np.float32))
    assert score > 0.9 and np.abs(lost - reference).mean() < 0.01 * width
    regions = FaceRegions(mesh, ("core",), (56,), 224, 0.25)
    _, state = regions(image, box, keypoints)
    assert np.array_equal(state[0], reference) and np.array_equal(state[1], box)


def _region_model(folder: Path, regions: tuple[str, ...] = REGION_NAMES, graph_regions: int | None = None) -> Path:
    """An UNTRAINED random-weights model whose encoder takes region masks (64 px crops; masks at 64,
    32, 16 and 8 px)."""
    from stream_guard.model.contract import ModelSpec
    from tools.sbi.export import export_graphs
    from tools.sbi.model import MEAN, STD, RegionStatsEncoder, TemporalHead
    torch.manual_seed(0)
    enc = RegionStatsEncoder(64, 0.25, pretrained=False, landmark_regions=True).eval()
    folder.mkdir(parents=True, exist_ok=True)
    count = len(regions) if graph_regions is None else graph_regions
    export_graphs(enc, TemporalHead(dim=enc.dim), 64, 8, folder, dim=enc.dim,
                  regions=[(count, s) for s in enc.region_sizes])
    ModelSpec(folder=folder, name="untrained-regions-test", version="0", trained=False,
              encoder_path=folder / "encoder.onnx", temporal_path=folder / "temporal.onnx", input_size=64,
              mean=MEAN, std=STD, crop_margin=0.25, embedding_dim=enc.dim, window=8, sample_hz=10.0,
              threshold=0.5, calibration_a=1.0, calibration_b=0.0, regions=regions,
              region_sizes=enc.region_sizes).save()
    return folder


@pytest.fixture(scope="module")
def region_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _region_model(tmp_path_factory.mktemp("region_model"))


def test_model_contract_carries_the_regions_and_the_scorer_needs_them(region_model: Path, astronaut_face) -> None:
    spec = load_model_spec(region_model)
    assert spec.regions == REGION_NAMES and spec.region_sizes == (64, 32, 16, 8)
    assert json.loads((region_model / "model.json").read_text())["region_sizes"] == [64, 32, 16, 8]
    scorer = FaceScorer(spec, ["CPUExecutionProvider"])
    image, box, keypoints = astronaut_face
    crops = crop_face(image, box, 64, 0.25)[None]
    regions = FaceRegions(FaceMesh(bundled_model(MODEL_FILE)), spec.regions, spec.region_sizes, 64, 0.25)
    masks = [m[None] for m in regions(image, box, keypoints)[0]]
    emb = scorer.encode(crops, masks)
    assert emb.shape == (1, 415 + 332) and np.isfinite(emb).all()
    with pytest.raises(ValueError, match="region masks"):
        scorer.encode(crops)


def test_region_names_must_be_known_and_match_the_graph(region_model: Path, tmp_path: Path) -> None:
    meta = json.loads((region_model / "model.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("encoder.onnx", "temporal.onnx"):
        (bad / name).write_bytes((region_model / name).read_bytes())
    (bad / "model.json").write_text(json.dumps({**meta, "regions": ["core", "forehead"]}))
    with pytest.raises(ModelError, match="unknown regions"):
        load_model_spec(bad)
    (bad / "model.json").write_text(json.dumps({**meta, "region_sizes": []}))
    with pytest.raises(ModelError, match="region_sizes"):
        load_model_spec(bad)
    (bad / "model.json").write_text(json.dumps({**meta, "regions": [], "region_sizes": []}))
    with pytest.raises(ModelError, match="takes 5 inputs"):  # the graph wants masks that model.json does not name
        FaceScorer(load_model_spec(bad), ["CPUExecutionProvider"])
    (bad / "model.json").write_text(json.dumps({**meta, "region_sizes": [64, 32, 16, 4]}))
    with pytest.raises(ModelError, match=r"\[N,5,4,4\]"):
        FaceScorer(load_model_spec(bad), ["CPUExecutionProvider"])
    mismatched = _region_model(tmp_path / "three", regions=("core", "seam_in", "seam_out"), graph_regions=5)
    with pytest.raises(ModelError, match=r"\[N,3,64,64\]"):
        FaceScorer(load_model_spec(mismatched), ["CPUExecutionProvider"])


def test_file_run_with_a_region_model_scores_the_face_on_every_sample(face_clip_720p: Path, region_model: Path,
                                                                        tmp_path: Path) -> None:
    out, events = tmp_path / "out.mp4", tmp_path / "ev.jsonl"
    result = run_cli("watch", str(face_clip_720p), "--out", str(out), "--events", str(events),
                     "--model", str(region_model), timeout=300)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    scores = [r["score"] for r in records if r["type"] == "track" and r["score"] is not None]
    assert records[-1]["frames_processed"] == 90 and len(scores) >= 10, records[-1]
    assert all(0.0 <= s <= 1.0 for s in scores)
