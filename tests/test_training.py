"""SBI training end to end on synthetic faces: train --smoke -> export -> ONNX Runtime parity."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_crop_face_geometry() -> None:
    from stream_guard.faces.crop import crop_face, crop_matrix, transform_points

    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 90:110] = 255  # a 20 px white square
    box = np.array([90.0, 40.0, 110.0, 60.0])
    crop = crop_face(img, box, 40, 0.5)  # side 40 px -> scale 1
    assert crop.shape == (40, 40, 3)
    assert crop[10:30, 10:30].min() == 255 and crop[:9].max() == 0
    corners = transform_points(box.reshape(2, 2), crop_matrix(box, 40, 0.5))
    np.testing.assert_allclose(corners, [[10, 10], [30, 30]], atol=1e-4)
    edge = crop_face(img, np.array([-20.0, -20.0, 20.0, 20.0]), 32, 0.0)  # off the image: replicated
    assert edge.shape == (32, 32, 3)


def test_self_blend_changes_only_the_face() -> None:
    from stream_guard.synth.self_blend import blend_frame, sample_clip_blend
    from tools.sbi.data import synthetic_clips

    clip = synthetic_clips(1)[0]
    rng = np.random.default_rng(0)
    fake, mask = blend_frame(clip.frames[0], clip.landmarks[0], sample_clip_blend(rng), rng)
    assert fake.shape == clip.frames[0].shape and fake.dtype == np.uint8
    assert 0.0 < mask.max() <= 1.0
    outside = mask == 0
    assert np.array_equal(fake[outside], clip.frames[0][outside])


@pytest.mark.slow
def test_smoke_train_export_parity(tmp_path: Path) -> None:
    import onnxruntime as ort

    from stream_guard.model.contract import load_model_spec

    run = tmp_path / "run"
    _run("tools.sbi.train", "--smoke", "--out", str(run))
    assert (run / "final.pt").is_file() and (run / "last.pt").is_file()
    assert "done" in (run / "train.log").read_text()
    out = tmp_path / "model"
    proc = _run("tools.sbi.export", "--smoke", "--ckpt", str(run / "final.pt"), "--out", str(out))
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert max(report["parity_max_abs"].values()) <= 1e-4

    spec = load_model_spec(out)
    assert spec.trained and spec.embedding_dim == 1280 and spec.window == 4
    enc = ort.InferenceSession(str(spec.encoder_path), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(spec.temporal_path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = np.random.default_rng(n).normal(size=(n, 3, spec.input_size, spec.input_size)).astype(np.float32)
        emb = enc.run(None, {enc.get_inputs()[0].name: x})[0]
        assert emb.shape == (n, spec.embedding_dim)
        for t in (1, spec.window):
            seq = np.repeat(emb[:, None], t, axis=1)
            logits = head.run(None, {head.get_inputs()[0].name: seq})[0]
            assert logits.shape == (n, 1) and np.isfinite(logits).all()


def test_smoke_fit_head_cross_validates_and_exports(tmp_path: Path) -> None:
    """Region-statistics model: grouped CV report, calibrated threshold, dynamic batch, parity."""
    import onnxruntime as ort

    from stream_guard.model.contract import load_model_spec
    from tools.sbi.folds import identity_groups

    out = tmp_path / "model"
    proc = _run("tools.sbi.fit_head", "--smoke", "--out", str(out), "--leave-family-out", "--repeats", "2")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert max(summary["parity_max_abs"].values()) <= 1e-4

    cv = json.loads((out / "crossval.json").read_text())
    files = sorted(cv["scores"])
    assert {f for fold in cv["folds"] for f in fold} == set(files)
    labels = ["fake" if f.startswith("fake/") else "real" for f in files]
    group = dict(zip(files, identity_groups(files, labels)))
    a, b = ({group[f] for f in fold} for fold in cv["folds"])
    assert not a & b, "an identity group is on both sides of the split"
    assert set(cv["families"]) == {"synA", "synB"} and cv["auc"] is not None
    assert set(cv["leave_family_out"]) == {"synA", "synB"}
    assert len(cv["repeats"]["runs"]) == 2
    assert {"pooled", "lofo:synA"} <= set(cv["repeats"]["mean"]) <= set(cv["repeats"]["std"])

    spec = load_model_spec(out)
    assert spec.trained and spec.embedding_dim == 415 and 0.5 <= spec.threshold < 1
    enc = ort.InferenceSession(str(spec.encoder_path), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(spec.temporal_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(3, 3, spec.input_size, spec.input_size)).astype(np.float32)
    emb = enc.run(None, {enc.get_inputs()[0].name: x})[0]
    assert emb.shape == (3, 415) and np.isfinite(emb).all()
    logits = head.run(None, {head.get_inputs()[0].name: np.repeat(emb[:, None], spec.window, axis=1)})[0]
    assert logits.shape == (3, 1) and np.isfinite(logits).all()
