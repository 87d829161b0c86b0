"""``stream-guard compare`` and ``tools.sbi.compare_releases``: paired AUC differences of two models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream_guard.compare import ScoredFile, compare_scored
from stream_guard.errors import ConfigError
from tests.conftest import run_cli


def _clips(rng: np.random.Generator) -> tuple[list[str], list[int]]:
    names = [f"cam_{i}.mp4" for i in range(30)] + [f"swap_{i}.mp4" for i in range(30)]
    names += [f"talk_{i}.mp4" for i in range(10)]  # fakes only
    return names, [0] * 30 + [1] * 40


def _write_report(path: Path, manifest: str, model: str, names: list[str], labels: list[int],
                  scores: np.ndarray) -> Path:
    files = [{"file": f"{manifest.rsplit('/', 1)[0]}/clips/{n}", "label": ("real", "fake")[y], "score": float(s)}
             for n, y, s in zip(names, labels, scores)]
    path.write_text(json.dumps({"model": model, "manifest": manifest, "files": files}))
    return path


@pytest.fixture()
def reports(tmp_path: Path) -> tuple[Path, Path]:
    """A good model and a weak one on the same clips, run from different working folders."""
    rng = np.random.default_rng(0)
    names, labels = _clips(rng)
    y = np.array(labels)
    good = np.where(y == 1, rng.normal(2.0, 1, y.size), rng.normal(0, 1, y.size))
    weak = np.where(y == 1, rng.normal(0.3, 1, y.size), rng.normal(0, 1, y.size))
    return (_write_report(tmp_path / "good.json", "/data/set/MANIFEST.tsv", "good", names, labels, good),
            _write_report(tmp_path / "weak.json", "set/MANIFEST.tsv", "weak", names, labels, weak))


def test_a_clearly_better_model_is_called_better_and_the_order_matters(reports: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    good, weak = reports
    out = tmp_path / "cmp.json"
    result = run_cli("compare", str(good), str(weak), "--json", str(out))
    assert result.returncode == 0, result.stderr
    cmp = json.loads(out.read_text())
    assert cmp["n_common"] == 70 and not cmp["only_in_a"] and not cmp["only_in_b"]
    pooled = cmp["pooled"]
    assert pooled["auc_a"] > pooled["auc_b"] and pooled["difference_ci"][0] > 0
    assert pooled["share_not_better"] < 0.025
    assert cmp["families"]["talk"] is None and cmp["families"]["cam"] is None  # one label only
    assert "A better" in result.stdout.splitlines()[-1] and "one label only" in result.stdout
    reverse = run_cli("compare", str(weak), str(good))
    assert "B better" in reverse.stdout.splitlines()[-1]


def test_a_small_difference_is_not_called_a_difference() -> None:
    rng = np.random.default_rng(1)
    names, labels = _clips(rng)
    y = np.array(labels)
    base = np.where(y == 1, rng.normal(1.0, 1, y.size), rng.normal(0, 1, y.size))
    nudged = base + rng.normal(0, 0.05, y.size)  # the same model, slightly perturbed
    a = {n: ScoredFile(lab, s) for n, lab, s in zip(names, labels, base)}
    b = {n: ScoredFile(lab, s) for n, lab, s in zip(names, labels, nudged)}
    pooled = compare_scored(a, b)["pooled"]
    low, high = pooled["difference_ci"]
    assert low < 0 < high and abs(pooled["difference"]) < 0.02
    against_all = compare_scored(a, b, against_all_reals=True)["families"]
    assert set(against_all) == {"swap", "talk"} and against_all["talk"]["n_real"] == 30


def test_mismatched_or_foreign_reports_are_one_line_errors(reports: tuple[Path, Path], tmp_path: Path) -> None:
    good, _ = reports
    flipped = json.loads(good.read_text())
    flipped["files"][0]["label"] = "fake"
    (tmp_path / "flipped.json").write_text(json.dumps(flipped))
    for other, message in ((tmp_path / "flipped.json", "labelled differently"),
                           (tmp_path / "missing.json", "report not found")):
        result = run_cli("compare", str(good), str(other))
        assert result.returncode == 2 and len(result.stderr_lines) == 1 and message in result.stderr
    (tmp_path / "scan.json").write_text(json.dumps({"files": []}))
    result = run_cli("compare", str(good), str(tmp_path / "scan.json"))
    assert result.returncode == 2 and "not a 'stream-guard evaluate --json' report" in result.stderr
    (tmp_path / "odd.json").write_text(json.dumps({"files": [], "manifest": None}))  # found by the fuzz test
    result = run_cli("compare", str(good), str(tmp_path / "odd.json"))
    assert result.returncode == 2 and len(result.stderr_lines) == 1 and "not a 'stream-guard evaluate" in result.stderr
    with pytest.raises(ConfigError, match="share no scored file"):
        compare_scored({"a_1.mp4": ScoredFile(0, 0.1)}, {"b_1.mp4": ScoredFile(0, 0.1)})


def test_compare_releases_pairs_two_crossval_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tools.sbi.compare_releases import main

    (tmp_path / "MANIFEST.tsv").write_text("file\tlabel\n" + "".join(
        f"{kind}/dfl_{i}.mp4\t{kind}\n" for kind in ("real", "fake") for i in range(8)))
    rng = np.random.default_rng(2)
    clips = [f"{kind}/dfl_{i}.mp4" for kind in ("real", "fake") for i in range(8)]
    videos = [f"realvid_src{i}__clip" for i in range(6)]
    for name, shift in (("new", 3.0), ("old", 0.0)):
        scores = {c: float(rng.normal(shift if c.startswith("fake") else 0)) for c in clips}
        scores.update({v: float(rng.normal()) for v in videos})
        (tmp_path / name).mkdir()
        (tmp_path / name / "crossval.json").write_text(json.dumps(
            {"scores": scores, "config": {"name": "m", "version": name},
             "leave_family_out_scores": {"dfl": {c: s - 1 for c, s in scores.items()}}}))
    assert main([str(tmp_path / "new" / "crossval.json"), str(tmp_path / "old" / "crossval.json"),
                 "--manifest", str(tmp_path / "MANIFEST.tsv")]) == 0
    out = capsys.readouterr().out
    dev, rest = out.split("== dev clips and real videos")
    with_videos, lofo = rest.split("== leave-family-out")
    assert "A = m new, B = m old; 16 files" in dev and "; 22 files" in with_videos
    pooled = [line for line in with_videos.splitlines() if line.startswith("POOLED")][0]
    assert pooled.split()[1:3] == ["14", "8"]  # 8 dev reals + 6 real videos against 8 fakes
    dfl = [line for line in lofo.splitlines() if line.startswith("dfl")][0]
    assert dfl.split()[1:3] == ["14", "8"] and dfl.endswith("A better") and "POOLED" not in lofo
    assert main([str(tmp_path / "MANIFEST.tsv"), str(tmp_path / "old" / "crossval.json"),
                 "--manifest", str(tmp_path / "MANIFEST.tsv")]) == 2


def test_reports_of_a_manifest_of_absolute_paths_match_wherever_evaluate_ran(reports: tuple[Path, Path],
                                                                             tmp_path: Path) -> None:
    """The same manifest, evaluated from two folders (given as ``man/m.tsv`` and as ``m.tsv``): its files,
    listed by absolute path, were made relative to each report's manifest path from compare's own folder,
    so the two reports shared no file. And ``--json`` naming one of the reports overwrote it."""
    good, weak = reports
    a, b = json.loads(good.read_text()), json.loads(weak.read_text())
    for report, manifest in ((a, "man/m.tsv"), (b, "m.tsv")):
        report["manifest"] = manifest
        for entry in report["files"]:
            entry["file"] = str(tmp_path / "clips" / Path(entry["file"]).name)
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    result = run_cli("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert result.returncode == 0, result.stderr
    before = (tmp_path / "a.json").read_text()
    result = run_cli("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json", str(tmp_path / "a.json"))
    assert result.returncode == 2 and "is one of the reports compared" in result.stderr
    assert (tmp_path / "a.json").read_text() == before


def test_a_manifest_of_absolute_and_relative_paths_pairs_every_file(reports: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    """Half the rows absolute, half relative, evaluated from two working folders: only the relative half
    was paired (every family 'one label only', no pooled AUC) and the rest listed as scored by one only."""
    good, weak = reports
    a, b = json.loads(good.read_text()), json.loads(weak.read_text())
    for report, folder in ((a, "set"), (b, "../elsewhere/and/deeper/set")):  # the manifest as each run named it
        report["manifest"] = f"{folder}/m.tsv"
        for i, entry in enumerate(report["files"]):
            name = Path(entry["file"]).name
            entry["file"] = f"/data/set/clips/{name}" if i % 2 else f"{folder}/clips/{name}"
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    result = run_cli("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json", str(tmp_path / "c.json"))
    assert result.returncode == 0, result.stderr
    comparison = json.loads((tmp_path / "c.json").read_text())
    assert comparison["n_common"] == 70 and not comparison["only_in_a"] and not comparison["only_in_b"]
    assert comparison["pooled"] is not None and comparison["families"]["cam"] is None  # reals only
