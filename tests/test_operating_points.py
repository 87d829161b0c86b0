"""Named operating points: ``--threshold quiet`` picks a threshold the model measured, on every command."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream_guard.errors import ConfigError, ModelError
from stream_guard.model.contract import load_model_spec
from stream_guard.model.provenance import Provenance
from stream_guard.pipeline import model_folder
from tests.conftest import QUIET, run_cli
from tools.placeholder_model import write_placeholder_model
from tools.sbi.metrics import measure_points
from tools.sbi.operating_points import main as operating_points_main


def _with_points(folder: Path, points: object) -> Path:
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "operating_points": points}))
    return folder


def test_a_name_a_number_or_nothing_picks_the_threshold(pointed_model: Path) -> None:
    spec = load_model_spec(pointed_model)
    assert spec.operating_points == (QUIET,)
    assert [spec.threshold_for(c) for c in (None, "default", "quiet", 0.25)] == [0.5, 0.5, 0.9, 0.25]
    assert [p.name for p in spec.named_thresholds()] == ["default", "quiet"]
    with pytest.raises(ConfigError, match=r"--threshold loud: model .* names the thresholds default, quiet; or "):
        spec.threshold_for("loud")
    assert QUIET.describe() == "quiet 0.900 (flags 10% of reals, catches 30% of fakes)"


@pytest.mark.parametrize(("points", "problem"), [
    ([0.9], "must map names"),
    ({"Quiet": {"threshold": 0.9}}, "must be lower-case"),
    ({"quiet": 0.9}, "must be an object"),
    ({"quiet": {}}, "'operating_points.quiet.threshold' is missing"),
    ({"quiet": {"threshold": 1.5}}, r"'operating_points.quiet.threshold'=1.5 is outside"),
    ({"quiet": {"threshold": 0.9, "fakes_caught": "most"}}, "'operating_points.quiet.fakes_caught' is missing or"),
    ({"default": {"threshold": 0.7}}, "'default' must be at 'threshold' \\(0.5\\)"),
])
def test_a_malformed_operating_point_is_a_model_error(tmp_path: Path, points: object, problem: str) -> None:
    folder = _with_points(write_placeholder_model(tmp_path).folder, points)
    with pytest.raises(ModelError, match=problem):
        load_model_spec(folder)


def test_the_shipped_models_name_their_points() -> None:
    for name in ("deepfake", "deepfake-ensemble"):
        spec = load_model_spec(model_folder(Path(name)))
        points = {p.name: p for p in spec.named_thresholds()}
        assert list(points) == ["default", "quiet", "sensitive"], name
        assert points["default"].threshold == spec.threshold
        assert points["sensitive"].threshold < points["quiet"].threshold
        assert points["quiet"].reals_flagged <= 0.10 and points["sensitive"].reals_flagged <= 0.30
        assert points["sensitive"].fakes_caught >= points["default"].fakes_caught >= points["quiet"].fakes_caught


def test_measured_points_flag_at_most_their_share_of_reals() -> None:
    rng = np.random.default_rng(0)
    labels = [0] * 100 + [1] * 50
    scores = np.concatenate([rng.uniform(0, 0.8, 100), rng.uniform(0.3, 1.0, 50)]).round(4).tolist()
    default, quiet, sensitive = measure_points(labels, scores, 0.7)
    reals, fakes = np.array(scores[:100]), np.array(scores[100:])
    assert (default.name, default.threshold) == ("default", 0.7)
    assert default.reals_flagged == np.mean(reals >= 0.7) and default.fakes_caught == np.mean(fakes >= 0.7)
    for point, share in ((quiet, 0.10), (sensitive, 0.30)):
        assert point.reals_flagged == np.mean(reals >= point.threshold) <= share
        assert np.mean(reals >= point.threshold - 0.001) > share  # the lowest such threshold, to 3 decimals
        assert point.fakes_caught == np.mean(fakes >= point.threshold)
    assert measure_points([0, 0], [0.1, 0.2], 0.5) == ()  # nothing to measure without fakes


def test_the_tool_writes_a_releases_points_from_its_crossval(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_placeholder_model(tmp_path / "release").folder
    rng = np.random.default_rng(1)
    dev = {f"real/r{i}.mp4": float(rng.uniform(0, 0.7)) for i in range(20)}
    dev |= {f"fake/f{i}.mp4": float(rng.uniform(0.4, 1.0)) for i in range(20)}
    videos = {f"realvid_src__v{i}": float(rng.uniform(0, 0.9)) for i in range(20)}
    (folder / "crossval.json").write_text(json.dumps({"scores": dev | videos, "config": {}}))
    manifest = tmp_path / "MANIFEST.tsv"
    manifest.write_text("file\tlabel\n" + "".join(f"{f}\t{f.split('/')[0]}\n" for f in dev))
    assert operating_points_main([str(folder), "--manifest", str(manifest)]) == 0
    spec = load_model_spec(folder)
    assert [p.name for p in spec.operating_points] == ["default", "quiet", "sensitive"]
    labels = [int(f.startswith("fake/")) for f in dev] + [0] * len(videos)
    assert spec.operating_points == measure_points(labels, list(dev.values()) + list(videos.values()), 0.5)
    assert "quiet 0." in capsys.readouterr().out


def test_scan_judges_at_the_named_threshold(pointed_model: Path, two_faces_clip: Path) -> None:
    quiet = run_cli("scan", str(two_faces_clip), "--model", str(pointed_model), "--threshold", "Quiet",
                    "--max-frames", "5")  # in any case, as users type it
    assert quiet.returncode in (0, 10), quiet.stderr
    assert quiet.stdout.rstrip().endswith("threshold 0.900 (quiet)"), quiet.stdout

    unknown = run_cli("scan", str(two_faces_clip), "--model", str(pointed_model), "--threshold", "loud")
    assert unknown.returncode == 2
    lines = unknown.stderr.strip().splitlines()
    assert len(lines) == 1 and "names the thresholds default, quiet" in lines[0], unknown.stderr

    garbled = run_cli("watch", str(two_faces_clip), "--threshold", "0.9x")
    assert garbled.returncode == 2 and "operating points" in garbled.stderr, garbled.stderr


def test_watch_records_the_named_threshold(pointed_model: Path, two_faces_clip: Path, tmp_path: Path) -> None:
    events = tmp_path / "ev.jsonl"
    result = run_cli("watch", str(two_faces_clip), "--model", str(pointed_model), "--threshold", "quiet",
                     "--events", str(events), "--max-frames", "5")
    assert result.returncode == 0, result.stderr
    start = json.loads(events.read_text().splitlines()[0])
    assert start["type"] == "start" and start["threshold"] == 0.9


@pytest.mark.parametrize(("choice", "name"), [(None, "default"), ("quiet", "quiet"), (0.9, "quiet"), (0.7, None)])
def test_what_judged_a_run_names_its_threshold(pointed_model: Path, choice: float | str | None,
                                               name: str | None) -> None:
    """Events, reports, alerts and evidence say which of the model's thresholds judged (a number that is
    one of them included), so a reader of ``threshold: 0.911`` need not look up that it is ``quiet``."""
    provenance = Provenance.of(load_model_spec(pointed_model), choice)
    assert provenance.to_json()["threshold_name"] == name
    assert provenance.threshold_text == f"{provenance.threshold:.3f}" + (f" ({name})" if name else "")
