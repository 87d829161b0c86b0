"""Provenance: every verdict names the software, model files (by digest) and threshold behind it,
and the digest is one anyone can recompute with ``sha256sum``."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stream_guard import __version__
from stream_guard.model.contract import load_model_spec
from stream_guard.model.provenance import Provenance, model_digest
from stream_guard.paths import models_dir
from tests.conftest import REPO, run_cli

MODEL_CARD = REPO / "models" / "MODEL_CARD.md"
SHIPPED = sorted(p.parent.name for p in models_dir().glob("*/model.json"))


def sha256sum_digest(folder: Path, names: list[str]) -> str:
    """``cd FOLDER && sha256sum NAMES | sha256sum``, run by coreutils itself."""
    listing = subprocess.run(["sha256sum", *names], cwd=folder, capture_output=True, check=True).stdout
    return subprocess.run(["sha256sum"], input=listing, capture_output=True, check=True).stdout.split()[0].decode()


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="coreutils' sha256sum is not installed")
@pytest.mark.parametrize("name", SHIPPED)
def test_the_model_digest_is_what_sha256sum_gives(name: str) -> None:
    folder = models_dir() / name
    spec = load_model_spec(folder)
    names = sorted(["model.json", spec.encoder_path.name, spec.temporal_path.name])
    assert model_digest(spec) == sha256sum_digest(folder, names)


def test_any_changed_byte_or_name_changes_the_digest(placeholder_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(placeholder_model, folder)
    original = model_digest(load_model_spec(folder))
    seen = {original}
    for name in ("model.json", "encoder.onnx", "temporal.onnx"):
        path = folder / name
        data = path.read_bytes()
        changed = data.replace(b"}", b" }", 1) if name == "model.json" else data[:-1] + bytes([data[-1] ^ 1])
        path.write_bytes(changed)
        seen.add(model_digest(load_model_spec(folder)))
        path.write_bytes(data)
    assert len(seen) == 4
    assert model_digest(load_model_spec(folder)) == original

    # a graph kept in a subfolder is listed under its path there, as sha256sum would name it
    (folder / "graphs").mkdir()
    (folder / "encoder.onnx").rename(folder / "graphs" / "cnn.onnx")
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "encoder": "graphs/cnn.onnx"}))
    moved = model_digest(load_model_spec(folder))
    assert moved not in seen
    if shutil.which("sha256sum"):
        assert moved == sha256sum_digest(folder, ["graphs/cnn.onnx", "model.json", "temporal.onnx"])


def test_the_model_card_states_each_shipped_models_digest() -> None:
    """A refit that forgets to update the card's digests fails here: the card's figures are for those files."""
    stated = dict(re.findall(r"^\| `([\w-]+)` \| [^|]+ \| `([0-9a-f]{64})` \|$", MODEL_CARD.read_text(), re.M))
    assert stated == {name: model_digest(load_model_spec(models_dir() / name)) for name in SHIPPED}


def test_a_run_records_the_model_and_threshold_that_judged_it(two_faces_clip: Path, placeholder_model: Path,
                                                              tmp_path: Path) -> None:
    events = tmp_path / "ev.jsonl"
    result = run_cli("watch", str(two_faces_clip), "--events", str(events), "--model", str(placeholder_model),
                     "--threshold", "0.7", "--max-frames", "10")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    expected = Provenance.of(load_model_spec(placeholder_model), 0.7).to_json()
    assert expected["stream_guard"] == __version__ and expected["threshold"] == 0.7
    for record in (records[0], records[-1]):  # the start and the summary
        assert {k: record[k] for k in expected} == expected

    # every alert names them too (threshold 0: every face is fake, so alerts are raised and closed)
    alerting = tmp_path / "alerts.jsonl"
    result = run_cli("watch", str(two_faces_clip), "--events", str(alerting), "--model", str(placeholder_model),
                     "--threshold", "0", "--max-frames", "60")
    assert result.returncode == 0, result.stderr
    alerts = [r for r in map(json.loads, alerting.read_text().splitlines()) if r["type"] == "alert"]
    expected_at_0 = {**expected, "threshold": 0.0}
    assert {a["alert"] for a in alerts} == {"fake", "cleared"}, alerts
    assert all({k: a[k] for k in expected_at_0} == expected_at_0 for a in alerts)

    # the same on stdout
    piped = run_cli("watch", str(two_faces_clip), "--events", "-", "--model", str(placeholder_model),
                    "--max-frames", "10")
    assert piped.returncode == 0, piped.stderr
    lines = [json.loads(line) for line in piped.stdout.splitlines() if line.startswith("{")]
    assert lines[0]["type"] == "start" and lines[-1]["type"] == "summary"
    assert lines[0]["model_sha256"] == expected["model_sha256"] and lines[0]["threshold"] == 0.5
