"""``stream-guard evaluate`` on a tiny synthetic manifest (videos, an image, a clip with no face)."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from stream_guard.errors import ConfigError
from stream_guard.evaluate import (live_alert_text, false_alarm_thresholds, family_of, live_alert_summary,
                                   metrics, read_manifest)
from stream_guard.file_analysis import TrackSeries, file_score
from stream_guard.model.contract import load_model_spec
from stream_guard.model.provenance import model_digest
from tests.conftest import REPO, run_cli
from tests.support.faces import astronaut_head, one_face_moving, two_faces_passing
from tests.support.synth_video import make_test_clip


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("manifest")
    (root / "clips").mkdir()
    make_test_clip(root / "clips" / "cam_a_1.mp4", seconds=1.5, width=640, height=360,
                   draw=one_face_moving(640, 360, face_px=200))
    make_test_clip(root / "clips" / "cam_b_2.mp4", seconds=1.5, width=640, height=360,
                   draw=two_faces_passing(n_frames=45))
    make_test_clip(root / "clips" / "swap_c_3.mp4", seconds=1.5, width=640, height=360,
                   draw=one_face_moving(640, 360, face_px=180, period=40))
    make_test_clip(root / "clips" / "swap_empty_4.mp4", seconds=1.0, width=320, height=180)  # no face
    cv2.imwrite(str(root / "clips" / "photo_x.png"), cv2.cvtColor(astronaut_head(), cv2.COLOR_RGB2BGR))
    rows = [("clips/cam_a_1.mp4", "real"), ("clips/cam_b_2.mp4", "real"), ("clips/swap_c_3.mp4", "fake"),
            ("clips/swap_empty_4.mp4", "fake"), ("clips/photo_x.png", "fake")]
    text = "file\tlabel\tnotes\n" + "".join(f"{f}\t{label}\tsynthetic\n" for f, label in rows)
    (root / "MANIFEST.tsv").write_text(text)
    return root / "MANIFEST.tsv"


def test_evaluate_reports_pooled_and_per_family(manifest: Path, placeholder_model: Path, tmp_path: Path) -> None:
    out, plot = tmp_path / "report.json", tmp_path / "roc.png"
    result = run_cli("evaluate", "--manifest", str(manifest), "--json", str(out), "--plot", str(plot), "--model",
                     str(placeholder_model))
    assert result.returncode == 0, result.stderr
    picture = cv2.imread(str(plot))
    assert picture is not None and picture.shape == (460, 1100, 3)
    report = json.loads(out.read_text())
    assert {"auc", "eer", "accuracy", "n_real", "n_fake", "families"} <= report.keys()
    assert report["model_sha256"] == model_digest(load_model_spec(placeholder_model)) and report["threshold"] == 0.5
    assert (report["n_real"], report["n_fake"]) == (2, 2)  # the no-face clip is counted apart
    assert 0.0 <= report["auc"] <= 1.0 and 0.0 <= report["eer"] <= 1.0 and 0.0 <= report["accuracy"] <= 1.0
    assert set(report["families"]) == {"cam", "swap", "photo"}
    assert report["families"]["cam"]["auc"] is None  # one label only: no AUC, said so
    assert report["families"]["cam"]["auc_ci"] is None
    low, high = report["auc_ci"]  # 2 reals, 2 fakes: the interval is honest about how little that says
    assert 0.0 <= low <= report["auc"] <= high <= 1.0
    assert "AUC 95% CI" in result.stdout and f"{low:.2f}-{high:.2f}" in result.stdout
    same = run_cli("compare", str(out), str(out))  # compare reads evaluate's own reports
    assert same.returncode == 0 and "POOLED" in same.stdout and "no clear difference" in same.stdout
    piped = run_cli("compare", str(out), str(out), "--json", "-", cwd=tmp_path)  # for a script: stdout is the JSON
    assert piped.returncode == 0 and json.loads(piped.stdout)["n_common"] == 4 and "POOLED" in piped.stderr
    assert not (tmp_path / "-").exists()  # a file named '-' it used to write
    assert report["families"]["cam"]["n_real"] == 2 and report["families"]["swap"]["no_face"] == 1
    assert [Path(e["file"]).name for e in report["no_face"]] == ["swap_empty_4.mp4"]
    two_faces = next(f for f in report["files"] if f["file"].endswith("cam_b_2.mp4"))
    assert two_faces["faces"] == 2
    assert "POOLED" in result.stdout and "no face found" in result.stdout
    # 2 real files: every target allows none of them, so the threshold sits just above the higher one
    top_real = max(f["score"] for f in report["files"] if f["label"] == "real")
    rows = report["false_alarm_thresholds"]
    assert [r["target"] for r in rows] == [0.01, 0.05, 0.10]
    assert all(r["threshold"] is None or (top_real < r["threshold"] <= top_real + 0.001001) for r in rows)
    assert (rows[0]["threshold"] is None) == (top_real >= 1.0)
    assert ("to flag at most 1% of these 2 real files" in result.stdout) == (rows[0]["threshold"] is not None)


def test_evaluate_measures_the_models_named_thresholds_on_these_files(manifest: Path, pointed_model: Path,
                                                                      tmp_path: Path) -> None:
    """Is ``quiet`` quiet on this footage too? Each named threshold, measured here beside out of fold."""
    out = tmp_path / "report.json"
    result = run_cli("evaluate", "--manifest", str(manifest), "--json", str(out), "--model", str(pointed_model),
                     "--threshold", "quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["threshold"] == 0.9  # judged at the named one
    reals = [f["score"] for f in report["files"] if f["label"] == "real"]
    fakes = [f["score"] for f in report["files"] if f["label"] == "fake"]
    rows = {r["name"]: r for r in report["operating_points"]}
    assert list(rows) == ["default", "quiet"]
    for name, threshold in (("default", 0.5), ("quiet", 0.9)):
        row = rows[name]
        assert row["threshold"] == threshold
        assert row["reals_flagged"] == sum(s >= threshold for s in reals) / len(reals)
        assert row["fakes_caught"] == sum(s >= threshold for s in fakes) / len(fakes)
    assert rows["quiet"]["out_of_fold"] == {"reals_flagged": 0.1, "fakes_caught": 0.3}
    assert rows["default"]["out_of_fold"] == {"reals_flagged": None, "fakes_caught": None}
    assert (f"--threshold quiet (0.900): flags {rows['quiet']['reals_flagged']:.0%} of these 2 real files "
            "(out of fold: 10%), catches") in result.stdout


def test_evaluate_writes_its_json_to_standard_output_for_scripts(manifest: Path, placeholder_model: Path,
                                                                  tmp_path: Path) -> None:
    """``--json -``: standard output is the report alone (it used to be a file named '-'); the table goes to stderr."""
    result = run_cli("evaluate", "--manifest", str(manifest), "--json", "-", "--max-frames", "15", "--model",
                     str(placeholder_model), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["n_real"], report["n_fake"]) == (2, 2) and "POOLED" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bad_model_threshold_or_unreadable_manifest_stops_evaluate_at_once(manifest: Path, pointed_model: Path,
                                                                              tmp_path: Path) -> None:
    """Not one "could not read" per file and exit 0: the run stops with one line."""
    for args, code, message in (
            (["--model", str(tmp_path / "nowhere")], 4, "model folder"),
            (["--model", str(pointed_model), "--threshold", "loud"], 2, "names the thresholds default, quiet")):
        result = run_cli("evaluate", "--manifest", str(manifest), *args)
        assert result.returncode == code and len(result.stderr_lines) == 1 and message in result.stderr, \
            result.stderr
    gone = tmp_path / "MANIFEST.tsv"
    gone.write_text("file\tlabel\nmissing_1.mp4\treal\nmissing_2.mp4\tfake\n")
    result = run_cli("evaluate", "--manifest", str(gone), "--model", str(pointed_model))
    assert result.returncode == 3, result.stderr
    assert result.stderr_lines[-1].startswith(f"stream-guard: error: none of the 2 file(s) of {gone} could be read")


def test_false_alarm_thresholds_flag_at_most_the_target_share_of_reals() -> None:
    reals = [i / 20 for i in range(20)]  # 0.00 ... 0.95
    rows = false_alarm_thresholds([0] * 20 + [1] * 4, reals + [0.99, 0.5, 0.97, 0.3])
    by_target = {r["target"]: r for r in rows}
    assert by_target[0.05]["threshold"] == pytest.approx(0.901)  # only 0.95 (1 of 20) at or above it
    assert by_target[0.05]["reals_flagged"] == pytest.approx(0.05)
    assert by_target[0.10]["threshold"] == pytest.approx(0.851) and by_target[0.10]["reals_flagged"] == 0.10
    assert by_target[0.01]["threshold"] == pytest.approx(0.951) and by_target[0.01]["fakes_caught"] == 0.5
    tied = false_alarm_thresholds([0] * 10, [0.9] * 10)  # ties: none of them may be flagged
    assert all(r["threshold"] == pytest.approx(0.901) and r["reals_flagged"] == 0 for r in tied)
    assert false_alarm_thresholds([0, 1], [1.0, 0.9])[0]["threshold"] is None  # even 1.0 flags the real
    assert false_alarm_thresholds([1, 1], [0.2, 0.3]) == []  # no reals, nothing to set it from


def test_manifest_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "m.tsv"
    bad.write_text("path\tclass\nx.mp4\treal\n")
    with pytest.raises(ConfigError, match="'file' and 'label'"):
        read_manifest(bad)
    bad.write_text("file\tlabel\nx.mp4\tmaybe\n")
    with pytest.raises(ConfigError, match="line 2"):
        read_manifest(bad)
    result = run_cli("evaluate", "--manifest", str(tmp_path / "missing.tsv"))
    assert result.returncode == 2 and len(result.stderr_lines) == 1 and "manifest not found" in result.stderr


def test_manifest_errors_name_the_line_an_editor_shows_and_files_listed_twice(tmp_path: Path) -> None:
    """Blank lines made the line number of a bad label wrong; a file listed twice counted twice in every
    figure, and one listed as both real and fake went through."""
    bad = tmp_path / "m.tsv"
    bad.write_text("file\tlabel\n\n\nclips/a.mp4\treal\n\nclips/b.mp4\tFAKE!\n")
    with pytest.raises(ConfigError, match="line 6: label 'FAKE!'"):
        read_manifest(bad)
    bad.write_text("file\tlabel\na.mp4\treal\nb.mp4\tfake\n./a.mp4\tfake\n")
    with pytest.raises(ConfigError, match="line 4: .*a.mp4 is labelled fake, but real on line 2"):
        read_manifest(bad)
    bad.write_text("file\tlabel\na.mp4\treal\nb.mp4\tfake\na.mp4\treal\n")
    assert [r.path.name for r in read_manifest(bad)] == ["a.mp4", "b.mp4"]


@pytest.mark.parametrize("text", [
    "\ufefffile\tlabel\r\ndfl_a.mp4\tReal\r\nimages/meso_b.jpg\tfake\r\n",  # tabs, a BOM, CRLF
    "file;label;source, licence\ndfl_a.mp4;real;cam\nimages/meso_b.jpg;fake;x\n",  # the first separator counts
    "file,label,note\r\ndfl_a.mp4,real,\"from camera 1, door\"\r\nimages/meso_b.jpg,FAKE,\r\n",  # a spreadsheet's CSV
    "file;label\ndfl_a.mp4;real\nimages\\meso_b.jpg;fake\n",  # ... where the decimal mark is a comma, on Windows
])
def test_a_manifest_exported_from_a_spreadsheet_is_read(tmp_path: Path, text: str) -> None:
    manifest = tmp_path / "labels.csv"
    manifest.write_bytes(text.encode("utf-8"))
    assert [(r.path, r.label, r.family) for r in read_manifest(manifest)] == [
        (tmp_path / "dfl_a.mp4", "real", "dfl"), (tmp_path / "images/meso_b.jpg", "fake", "meso")]


def test_manifest_rows_may_be_urls(tmp_path: Path) -> None:
    manifest = tmp_path / "labels.tsv"
    manifest.write_text("file\tlabel\nhttps://cdn.example.com/set/dfdc_a.mp4?sig=1\tfake\n"
                        f"file://{tmp_path}/clips/dfl_b.mp4\treal\n")
    assert [(r.path, r.family) for r in read_manifest(manifest)] == [
        ("https://cdn.example.com/set/dfdc_a.mp4?sig=1", "dfdc"), (tmp_path / "clips/dfl_b.mp4", "dfl")]
    manifest.write_text("file\tlabel\ndfl_a.mp4\treal\nftp://example.com/b.mp4\tfake\n")
    with pytest.raises(ConfigError, match=r"labels.tsv line 3: unknown URL scheme 'ftp://'"):
        read_manifest(manifest)


def test_family_and_score_rules() -> None:
    assert family_of("dfl_Keanu_Reeves_0_L.mp4") == "dfl" and family_of("images/meso_x.jpg") == "meso"
    assert family_of("plain.mp4") == "plain"
    short = TrackSeries(1, scores=[0.99])  # a one-window blip does not outvote a steady face...
    steady = TrackSeries(2, scores=[0.2, 0.3, 0.4])
    assert file_score([short, steady]) == pytest.approx(0.3)
    assert file_score([short]) == pytest.approx(0.99)  # ...unless it is all there is
    assert file_score([]) is None
    m = metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.5)
    assert m["auc"] == pytest.approx(0.75) and m["accuracy"] == pytest.approx(0.75)


def test_evaluate_replays_the_live_alert_rule(manifest: Path, placeholder_model: Path, tmp_path: Path) -> None:
    """At threshold 0 every scored window is fake: each face raises an alert once the rule's
    count of windows is reached, on real files too, and the report counts them per file and hour."""
    out = tmp_path / "report.json"
    result = run_cli("evaluate", "--manifest", str(manifest), "--json", str(out), "--model", str(placeholder_model),
                     "--threshold", "0", "--alert-raise", "2")
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    files = {Path(f["file"]).name: f for f in report["files"]}
    assert files["cam_b_2.mp4"]["alerts"] == 2 and files["cam_a_1.mp4"]["alerts"] == 1  # one per face
    assert all(f["first_alert_s"] is not None and 0 < f["first_alert_s"] < f["duration_s"] for f in files.values())
    live = report["live_alerts"]
    real_hours = (files["cam_a_1.mp4"]["duration_s"] + files["cam_b_2.mp4"]["duration_s"]) / 3600
    assert (live["raise_windows"], live["clear_windows"]) == (2, 5)
    counts = (live["fake_files"], live["fake_files_alerted"], live["real_files"], live["real_files_alerted"])
    assert counts == (2, 2, 2, 2)
    assert live["false_alerts"] == 3 and live["false_alerts_per_hour"] == pytest.approx(3 / real_hours, abs=0.1)
    assert report["families"]["cam"]["live_alerts"]["false_alerts"] == 3
    assert report["families"]["swap"]["live_alerts"]["fake_files_alerted"] == 1
    assert "2 of 2 fake files raised an alert" in result.stdout and "raised 3 false alert(s) in 3 s of video" \
        in result.stdout


def test_evaluate_suggests_thresholds_for_false_alert_rates(manifest: Path, placeholder_model: Path,
                                                            tmp_path: Path) -> None:
    """The suggested --threshold, run for real, raises no false alert on these 3 s of real video
    (any alert is over 60 an hour), and the grid's next threshold below it does."""
    from stream_guard.alert_replay import THRESHOLD_GRID

    def run(*extra: str) -> tuple[dict, str]:
        out = tmp_path / "report.json"
        result = run_cli("evaluate", "--manifest", str(manifest), "--json", str(out), "--model",
                         str(placeholder_model), "--alert-raise", "2", *extra)
        assert result.returncode == 0, result.stderr
        return json.loads(out.read_text()), result.stdout

    report, stdout = run("--threshold", "0")
    rows = report["live_alert_thresholds"]
    assert [r["target_per_hour"] for r in rows] == [60, 10, 1]
    suggested = rows[0]["threshold"]
    assert suggested is not None and suggested > THRESHOLD_GRID[0] and all(r["threshold"] == suggested for r in rows)
    assert rows[0]["false_alerts_per_hour"] == 0 and rows[0]["false_alert_share"] == 0
    assert f"--threshold {suggested:.3f}" in stdout and "at most 60 false alert(s) per hour on these 2 real files" \
        in stdout
    at_suggested, _ = run("--threshold", str(suggested))
    assert at_suggested["live_alerts"]["false_alerts"] == 0
    assert at_suggested["live_alerts"]["fake_files_alerted"] == rows[0]["fake_files_alerted"]
    below, _ = run("--threshold", str(THRESHOLD_GRID[THRESHOLD_GRID.index(suggested) - 1]))
    assert below["live_alerts"]["false_alerts"] > 0


def test_live_alert_summary_counts_files_and_hours() -> None:
    files = [{"label": "fake", "alerts": 2, "first_alert_s": 4.0, "duration_s": 10.0},
             {"label": "fake", "alerts": 0, "first_alert_s": None, "duration_s": 10.0},
             {"label": "fake", "alerts": 1, "first_alert_s": 1.0, "duration_s": 10.0},
             {"label": "real", "alerts": 0, "first_alert_s": None, "duration_s": 1800.0},
             {"label": "real", "alerts": 3, "first_alert_s": 7.0, "duration_s": 1800.0}]
    assert live_alert_summary(files) == {
        "fake_files": 3, "fake_files_alerted": 2, "median_first_alert_s": 2.5, "real_files": 2,
        "real_files_alerted": 1, "false_alerts": 3, "real_video_hours": 1.0, "false_alerts_per_hour": 3.0}
    assert live_alert_summary(files[:3])["false_alerts_per_hour"] is None  # no real video to count on
    only_reals = {"raise_windows": 3, "clear_windows": 5, **live_alert_summary(files[3:])}
    assert live_alert_text(only_reals) == \
        "1 of 2 real files raised 3 false alert(s) in 60.0 minutes of video (3.0 per hour)"


def test_evaluate_reports_by_face_size(manifest: Path, placeholder_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = run_cli("evaluate", "--manifest", str(manifest), "--json", str(out), "--model", str(placeholder_model))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    files, bands = report["files"], report["by_face_size"]
    assert all(f["face_px"] > 0 for f in files)
    for band in bands:  # each file counted once, in the band its face size falls into
        inside = [f for f in files if band["min_px"] <= f["face_px"] < (band["max_px"] or float("inf"))]
        assert (band["n_real"], band["n_fake"]) == (sum(f["label"] == "real" for f in inside),
                                                    sum(f["label"] == "fake" for f in inside)) != (0, 0)
    assert sum(b["n_real"] + b["n_fake"] for b in bands) == len(files)
    assert "by face size (median box height of the scored face): " in result.stdout
    cam_a = next(f for f in files if f["file"].endswith("cam_a_1.mp4"))
    swap = next(f for f in files if f["file"].endswith("swap_c_3.mp4"))
    assert cam_a["face_px"] > swap["face_px"]  # a 200 px head has a larger face box than a 180 px one


def test_the_plot_of_files_with_one_label_says_why_it_has_no_roc_curve(tmp_path: Path) -> None:
    from stream_guard.evaluate_plot import plot_evaluation

    report = {"files": [{"file": f"cam_{i}.mp4", "label": "real", "family": "cam", "score": s}
                        for i, s in enumerate((0.1, 0.4, 0.9))] + [
                       {"file": "cam_x.mp4", "label": "fake", "family": "cam", "score": None}],
              "threshold": 0.5, "model": "m", "manifest": "M.tsv"}
    picture = cv2.imread(str(plot_evaluation(report, tmp_path / "p.png")))
    assert picture is not None and picture.std() > 10
    assert plot_evaluation(report, tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")
    assert plot_evaluation(report, tmp_path / "p.pdf").read_bytes().startswith(b"%PDF")


def test_evaluate_shows_each_files_frames_on_a_terminal(manifest: Path, placeholder_model: Path) -> None:
    """Each file's line, then a bar of its frames under it while it is read (a long clip shows it is going on)."""
    from tests.support.terminal import run_on_a_terminal

    code, shown = run_on_a_terminal(["evaluate", "--manifest", str(manifest), "--model", str(placeholder_model)])
    assert code == 0, shown
    lines = shown.replace("\r", "\n").splitlines()
    assert any(line.startswith("[1/5] ") and line.endswith("cam_a_1.mp4") for line in lines), shown
    bars = [line for line in lines if "frame/s" in line]
    assert any(re.search(r"cam_a_1\.mp4: +\d+%\|.*\| +[1-9]\d*/45 \[", line) for line in bars), bars
    assert "frame/s" not in run_cli("evaluate", "--manifest", str(manifest), "--model",
                                    str(placeholder_model)).stderr  # not on a log or a pipe


def test_evaluate_refuses_to_write_its_report_over_one_of_the_manifests_files(manifest: Path,
                                                                              placeholder_model: Path) -> None:
    clip = manifest.parent / "clips" / "cam_a_1.mp4"
    before = clip.read_bytes()
    result = run_cli("evaluate", "--manifest", str(manifest), "--json", str(clip), "--model", str(placeholder_model))
    assert result.returncode == 2 and len(result.stderr_lines) == 1, result.stderr
    assert "is one of the manifest's files: writing it would destroy it" in result.stderr
    assert clip.read_bytes() == before


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_evaluation_writes_no_report_from_part_of_the_manifest(signum: int, tmp_path: Path,
                                                                        placeholder_model: Path) -> None:
    """Ctrl-C stopped only the file being scored: the evaluation went on, that file scored on part of its
    frames, and the report was written as if whole. SIGTERM killed it (exit 143)."""
    make_test_clip(tmp_path / "long_a.mp4", seconds=20.0, width=640, height=360,
                   draw=one_face_moving(640, 360, face_px=200))
    (tmp_path / "m.tsv").write_text("file\tlabel\nlong_a.mp4\treal\nlong_a_copy.mp4\tfake\n")
    (tmp_path / "long_a_copy.mp4").write_bytes((tmp_path / "long_a.mp4").read_bytes())
    report = tmp_path / "report.json"
    proc = subprocess.Popen([sys.executable, "-m", "stream_guard", "evaluate", "--manifest", str(tmp_path / "m.tsv"),
                             "--json", str(report), "--model", str(placeholder_model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("[1/2]")
        time.sleep(1.0)  # into the first file
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "[2/2]" not in stderr and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == ("stream-guard: interrupted: no report written (its figures would "
                                               "be of part of the manifest)")
    assert not report.exists()
