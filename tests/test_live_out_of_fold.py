"""``fit_head --fold-models`` and ``tools.sbi.live_out_of_fold``: every file scored through the
pipeline by the fold model that never saw it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from stream_guard.model.contract import load_model_spec
from tests.support.faces import astronaut_head, one_face_moving
from tests.support.synth_video import make_test_clip

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str | Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke release with its fold models (2 folds)."""
    root = tmp_path_factory.mktemp("fit")
    proc = _run("tools.sbi.fit_head", "--smoke", "--out", root / "model", "--fold-models", root / "folds")
    assert "fold models ->" in proc.stdout
    return root


def test_fold_models_are_the_cross_validated_fits(fitted: Path) -> None:
    release = load_model_spec(fitted / "model")
    cv = json.loads((fitted / "model" / "crossval.json").read_text())
    doc = json.loads((fitted / "folds" / "folds.json").read_text())
    assert [sorted(e["name"] for e in fold["files"]) for fold in doc["folds"]] == cv["folds"]
    assert doc["max_abs_clip_logit_diff"] <= 1e-3  # each fold graph reproduces the cross-validated clip logits
    sources = {e["name"]: e for fold in doc["folds"] for e in fold["files"]}
    assert {e["data"] for n, e in sources.items() if n.startswith("realvid_")} == {"real"}
    assert all(e["data"] == "labelled" and e["file"] == n for n, e in sources.items() if not n.startswith("realvid_"))
    temporals = {(fitted / "model" / "temporal.onnx").read_bytes()}
    for k in range(len(doc["folds"])):
        spec = load_model_spec(fitted / "folds" / f"fold{k}")
        assert spec.name == f"{release.name}-fold{k}" and spec.threshold == release.threshold
        assert (spec.calibration_a, spec.calibration_b) == (release.calibration_a, release.calibration_b)
        assert spec.encoder_path.read_bytes() == release.encoder_path.read_bytes()
        temporals.add(spec.temporal_path.read_bytes())
    assert len(temporals) == 1 + len(doc["folds"])  # each fold has its own frame classifier


def test_each_file_is_scored_by_its_own_fold_model(fitted: Path, tmp_path: Path) -> None:
    folds = Path(shutil.copytree(fitted / "folds", tmp_path / "folds"))  # its folds.json is cut down below
    doc = json.loads((folds / "folds.json").read_text())
    labelled, real = tmp_path / "dev", tmp_path / "train_real"
    kept = []  # one real and one fake clip of each fold, and one real video: enough to show the routing
    for fold in doc["folds"]:
        files = [next(e for e in fold["files"] if e["data"] == "labelled" and e["label"] == label)
                 for label in ("real", "fake")]
        files += [e for e in fold["files"] if e["data"] == "real"][:1]
        kept.append({**fold, "files": files})
    assert sum(e["data"] == "real" for fold in kept for e in fold["files"]) == 1
    for period, entry in enumerate(e for fold in kept for e in fold["files"]):
        path = (real if entry["data"] == "real" else labelled) / entry["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        if entry["data"] == "real":  # the smoke's real "videos" are photos
            cv2.imwrite(str(path), cv2.cvtColor(astronaut_head(), cv2.COLOR_RGB2BGR))
        else:
            make_test_clip(path, seconds=1.5, width=480, height=270,
                           draw=one_face_moving(480, 270, face_px=150, period=30 + 10 * period))
    (folds / "folds.json").write_text(json.dumps({**doc, "folds": kept}))

    out = tmp_path / "oof.json"
    proc = _run("tools.sbi.live_out_of_fold", folds, "--labelled-data", labelled, "--real-data", real,
                "--crossval", fitted / "model" / "crossval.json", "--json", out)
    reports = json.loads(out.read_text())
    assert (reports["labelled"]["n_real"], reports["labelled"]["n_fake"]) == (2, 2)
    assert reports["labelled"]["n_no_face"] == reports["labelled"]["n_failed"] == 0
    videos = reports["with_real_videos"]
    assert (videos["n_real"], videos["n_fake"]) == (3, 2) and "realvid_synthetic" in videos["families"]
    assert "realvid_synthetic" not in reports["labelled"]["families"]
    assert reports["crossval_agreement"]["files"] == 5
    assert "with the real videos among the reals" in proc.stdout and "realvid_synthetic:" in proc.stdout

    scores = {Path(f["file"]).name: f["score"] for f in videos["files"]}
    for k, fold in enumerate(kept):  # the same files through stream-guard evaluate with each fold's model
        rows = "".join(f"{labelled / e['file']}\t{e['label']}\n" for e in fold["files"] if e["data"] == "labelled")
        (tmp_path / f"fold{k}.tsv").write_text("file\tlabel\n" + rows)
        by_model = []
        for model in ("fold0", "fold1"):
            report = tmp_path / f"fold{k}_{model}.json"
            _run("stream_guard", "evaluate", "--manifest", tmp_path / f"fold{k}.tsv", "--model", folds / model,
                 "--json", report)
            by_model.append({Path(f["file"]).name: f["score"] for f in json.loads(report.read_text())["files"]})
        own, other = by_model[k], by_model[1 - k]
        assert own == {name: scores[name] for name in own}
        assert own != other


@pytest.mark.parametrize(("case", "message"), [
    ("no folds file", "folds.json"),
    ("no data folder", "no such data folder"),
    ("bad alert rule", "--alert-raise must be at least 1"),
])
def test_bad_input_is_one_error_line(fitted: Path, tmp_path: Path, case: str, message: str) -> None:
    folds = tmp_path if case == "no folds file" else fitted / "folds"
    data = tmp_path / "missing" if case == "no data folder" else tmp_path
    extra = ["--alert-raise", "0"] if case == "bad alert rule" else []
    proc = subprocess.run([sys.executable, "-m", "tools.sbi.live_out_of_fold", str(folds), "--labelled-data",
                           str(data), *extra], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and len(proc.stderr.splitlines()) == 1
    assert message in proc.stderr
