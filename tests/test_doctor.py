"""`stream-guard doctor`: one line per check, exit 1 only when something required is missing."""
from __future__ import annotations

import re

from stream_guard.model.contract import load_model_spec
from stream_guard.model.provenance import model_digest
from stream_guard.pipeline import default_model_dir, shipped_model_names
from tests.conftest import run_cli

LINE = re.compile(r"^\[\s*(ok|warn|missing)\] (\S.*?)\s{2,}(.*)$")


def test_doctor_reports_every_check_and_the_shipped_models() -> None:
    result = run_cli("doctor")
    rows = [LINE.match(line) for line in result.stdout.splitlines()]
    assert rows and all(rows), result.stdout
    checks = {m.group(2).strip(): (m.group(1), m.group(3)) for m in rows}
    for name in ("python", "numpy", "av", "onnxruntime", "providers", "face mesh", "deepfake model"):
        assert name in checks, result.stdout
    status, detail = checks["deepfake model"]
    assert status == "ok" and all(n in detail for n in shipped_model_names())
    assert f"sha256 {model_digest(load_model_spec(default_model_dir()))}" in detail
    assert {"deepfake", "deepfake-ensemble", "untrained-placeholder"} <= set(shipped_model_names())
    assert "CPUExecutionProvider" in checks["providers"][1]
    assert checks["face mesh"] == ("ok", "face_landmark.onnx")
    for what, dist, extra in (("virtual camera", "pyvirtualcam", "virtualcam"), ("HEIC photos", "pillow-heif", "heic")):
        status, detail = checks[what]  # optional: the test extras install both
        assert (status, detail.split()[0]) == ("ok", dist) or detail == (
            f"{dist} not installed: pip install 'stream-guard[{extra}]'"), checks[what]
    missing = any(m.group(1) == "missing" for m in rows)
    assert result.returncode == (1 if missing else 0), result.stdout
