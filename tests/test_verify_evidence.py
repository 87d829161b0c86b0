"""``stream-guard verify``: evidence written by the real snapshot and clip outputs, checked, then tampered with."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_guard.outputs.alert_clips import ClipSink
from stream_guard.outputs.alerts import AlertOptions
from stream_guard.outputs.snapshots import ALERT_LOG, SnapshotSink
from stream_guard.model.contract import load_model_spec
from stream_guard.model.provenance import model_digest
from stream_guard.paths import models_dir
from stream_guard.verify_evidence import EARLIER_RELEASES, EXIT_EVIDENCE_ALTERED
from tests.conftest import run_cli
from tests.support.alert_frames import INFO, NOISY_FAKE_THEN_REAL, PROVENANCE, verdict_sequence

OPTIONS = AlertOptions(raise_windows=3, clear_windows=5)


@pytest.fixture()
def evidence(tmp_path: Path) -> Path:
    """One alert's two pictures and its clip, in one folder, as a run writes them."""
    folder = tmp_path / "evidence"
    results = verdict_sequence(NOISY_FAKE_THEN_REAL + ["-"] * 10)
    sinks = [SnapshotSink(folder, OPTIONS, keep=10, provenance=PROVENANCE),
             ClipSink(folder, OPTIONS, pad_s=0.3, keep=10, provenance=PROVENANCE)]
    for sink in sinks:
        sink.open(INFO)
        for r in results:
            sink.write(r)
        sink.event({"type": "summary"})
        sink.close()
    assert len(list(folder.glob("*.jpg"))) == 2 and len(list(folder.glob("*.mp4"))) == 1
    return folder


def test_untouched_evidence_verifies(evidence: Path) -> None:
    result = run_cli("verify", str(evidence))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (f"{evidence}: 3 file(s) intact, 0 altered, 0 deleted, 0 not in the logs, 0 removed by --snapshot-keep "
            "or --clip-keep") in result.stdout
    # the test model is no shipped one, and verify says so rather than vouching for it
    assert f"judged by m 1 (model_sha256 {'0' * 64}): 3 log line(s); not a model this installation ships" \
        in result.stdout


def test_evidence_judged_by_an_earlier_release_says_so(evidence: Path) -> None:
    """After an upgrade, evidence judged by the release before is named as such, not as an unknown model."""
    releases = json.loads((models_dir() / EARLIER_RELEASES).read_text())["releases"]
    current = {model_digest(load_model_spec(meta.parent)) for meta in models_dir().glob("*/model.json")}
    shipped = {meta.parent.name for meta in models_dir().glob("*/model.json")}
    assert releases and all(r["model_sha256"] not in current and r["folder"] in shipped for r in releases)
    earlier = releases[0]
    for log in (evidence / "alerts.jsonl", evidence / "clips.jsonl"):
        log.write_text(log.read_text().replace("0" * 64, earlier["model_sha256"]))
    result = run_cli("verify", str(evidence))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (f"(model_sha256 {earlier['model_sha256']}): 3 log line(s); an earlier release of '{earlier['folder']}', "
            f"no longer shipped here ({earlier['note']})") in result.stdout


def test_an_altered_added_or_deleted_file_fails(evidence: Path) -> None:
    frame = next(evidence.glob("*_frame.jpg"))
    frame.write_bytes(frame.read_bytes()[:-1] + b"\x00")  # one byte
    planted = evidence / "20300101T000000.000Z_face7_face.jpg"
    planted.write_bytes(next(evidence.glob("*_face.jpg")).read_bytes())
    clip = next(evidence.glob("*.mp4"))
    clip.unlink()  # no --clip-keep removed it: deleted by hand
    result = run_cli("verify", str(evidence))
    assert result.returncode == EXIT_EVIDENCE_ALTERED, result.stdout + result.stderr
    assert "1 file(s) intact, 1 altered, 1 deleted, 1 not in the logs, 0 removed" in result.stdout
    assert f"ALTERED {frame.name}: sha256 " in result.stdout and f"NOT IN THE LOGS {planted.name}" in result.stdout
    assert f"DELETED {clip.name}: logged, gone, and not removed by --snapshot-keep or --clip-keep" in result.stdout

    planted.unlink()
    frame.unlink()
    deleted = run_cli("verify", str(evidence))
    assert deleted.returncode == EXIT_EVIDENCE_ALTERED
    assert "1 file(s) intact, 0 altered, 2 deleted, 0 not in the logs" in deleted.stdout


def test_files_the_keep_options_removed_are_only_counted(tmp_path: Path) -> None:
    """Two alerts, one kept: the first alert's pictures and clip are removed, and the logs say so."""
    folder = tmp_path / "evidence"
    first = verdict_sequence(NOISY_FAKE_THEN_REAL + ["-"] * 10, track_id=3)
    second = verdict_sequence(["-"] * len(first) + NOISY_FAKE_THEN_REAL + ["-"] * 10, track_id=4)[len(first):]
    for sink in (SnapshotSink(folder, OPTIONS, keep=1, provenance=PROVENANCE),
                 ClipSink(folder, OPTIONS, pad_s=0.3, keep=1, provenance=PROVENANCE)):
        sink.open(INFO)
        for r in first + second:
            sink.write(r)
        sink.event({"type": "summary"})
        sink.close()
    assert len(list(folder.glob("*.jpg"))) == 2 and len(list(folder.glob("*.mp4"))) == 1
    result = run_cli("verify", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 file(s) intact, 0 altered, 0 deleted, 0 not in the logs, 3 removed by --snapshot-keep or --clip-keep" \
        in result.stdout


def test_logs_from_before_removals_were_logged_count_a_gone_file_without_failing(evidence: Path) -> None:
    for log in (evidence / "alerts.jsonl", evidence / "clips.jsonl"):
        records = [json.loads(line) for line in log.read_text().splitlines()]
        log.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "keep"}) + "\n" for r in records))
    next(evidence.glob("*.mp4")).unlink()
    result = run_cli("verify", str(evidence))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 deleted" in result.stdout
    assert "1 logged but gone, by a version that did not log what --snapshot-keep and --clip-keep removed" \
        in result.stdout


def test_older_logs_without_digests_and_broken_lines_are_reported_not_failed(evidence: Path) -> None:
    records = [json.loads(line) for line in (evidence / ALERT_LOG).read_text().splitlines()]
    for record in records:
        record.pop("frame_sha256", None)
    (evidence / ALERT_LOG).write_text("".join(json.dumps(r) + "\n" for r in records) + '{"type": "al')
    result = run_cli("verify", str(evidence))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 file(s) intact" in result.stdout and "1 logged without a digest" in result.stdout
    assert "1 log line(s) are not JSON" in result.stdout


def test_a_folder_that_is_not_evidence_is_a_one_line_error(tmp_path: Path) -> None:
    missing = run_cli("verify", str(tmp_path / "nowhere"))
    assert missing.returncode == 3
    assert missing.stderr_lines == [f"stream-guard: error: no such folder: {tmp_path / 'nowhere'}"]
    empty = run_cli("verify", str(tmp_path))
    assert empty.returncode == 3 and len(empty.stderr_lines) == 1
    assert "not a --snapshots or --clips folder" in empty.stderr
    (tmp_path / "notes.txt").write_text("")
    a_file = run_cli("verify", str(tmp_path / "notes.txt"))
    assert a_file.returncode == 3
    assert a_file.stderr_lines == [f"stream-guard: error: {tmp_path / 'notes.txt'} is a file, "
                                   "not a --snapshots or --clips folder"]


def test_a_log_given_instead_of_its_folder_checks_the_folder(evidence: Path) -> None:
    frame = next(evidence.glob("*_frame.jpg"))
    frame.write_bytes(frame.read_bytes()[:-1] + b"\x00")
    for log in ("alerts.jsonl", "clips.jsonl"):
        result = run_cli("verify", str(evidence / log))
        assert result.returncode == EXIT_EVIDENCE_ALTERED, result.stdout + result.stderr
        assert f"{evidence}: 2 file(s) intact, 1 altered" in result.stdout
