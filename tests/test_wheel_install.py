"""The built wheel is what users install: it must carry every shipped model file and run the
demo on its own, away from this checkout (an editable install would hide a packaging gap)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
WHEEL_MODELS = "stream_guard/models/"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("stream_guard-*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel's contents, as pip would lay out a pure-Python wheel in site-packages."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def shipped_model_files() -> set[str]:
    return {p.relative_to(MODELS).as_posix() for p in MODELS.rglob("*") if p.is_file()}


def test_wheel_carries_every_shipped_model_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = {n[len(WHEEL_MODELS):] for n in zf.namelist() if n.startswith(WHEEL_MODELS)}
        entry_points = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")))
    missing = shipped_model_files() - in_wheel
    assert not missing, f"models/ files left out of the wheel: {sorted(missing)}"
    assert {"deepfake/model.json", "face_detection_full_range.onnx", "face_landmark.onnx"} <= in_wheel
    assert b"stream-guard = stream_guard.cli:main" in entry_points


def test_demo_runs_from_the_wheel_alone(unpacked: Path, tmp_path: Path) -> None:
    # PYTHONPATH comes before site-packages, so the wheel's copy of the package is the one imported
    # and its models are found inside the package, not in this checkout's models/.
    env = {**os.environ, "PYTHONPATH": str(unpacked), "MPLBACKEND": "Agg"}
    where = subprocess.run(
        [sys.executable, "-c", "import stream_guard.paths as p, stream_guard.pipeline as q; "
                               "print(p.models_dir()); print(q.default_model_dir())"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert where.returncode == 0, where.stderr
    models_dir, default_model = (Path(line) for line in where.stdout.split())
    assert models_dir == unpacked / "stream_guard" / "models"
    assert default_model == models_dir / "deepfake"

    out_dir = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "stream_guard", "demo", "--seconds", "3", "--out-dir", str(out_dir)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out_dir / "summary.json").read_text())
    shipped = json.loads((MODELS / "deepfake" / "model.json").read_text())
    assert summary["model"] == shipped["name"] and summary["model_trained"] is True
    assert summary["frames_processed"] == summary["frames_read"] > 0
    assert len(summary["tracks"]) == 2
    assert (out_dir / "demo.mp4").stat().st_size > 0
