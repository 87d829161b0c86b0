"""Alert snapshots: pictures of each raised fake alert and the alert log, on scripted verdicts
and end to end on the embedded demo with the shipped model."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_guard.errors import OutputError
from stream_guard.outputs.alerts import CLEARED, RAISED, REASON_END, REASON_FAKE, REASON_REAL, AlertOptions
from stream_guard.outputs.snapshots import ALERT_LOG, SnapshotSink, face_crop
from tests.conftest import run_cli
from stream_guard.model.contract import load_model_spec
from stream_guard.model.provenance import model_digest
from stream_guard.pipeline import default_model_dir
from tests.support.alert_frames import INFO, NOISY_FAKE_THEN_REAL, PROVENANCE, face, result, verdict_sequence

OPTIONS = AlertOptions(raise_windows=3, clear_windows=5)


def run_sink(sink: SnapshotSink, results) -> None:
    sink.open(INFO)
    try:
        for r in results:
            sink.write(r)
        sink.event({"type": "summary"})
    finally:
        sink.close()


def log_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / ALERT_LOG).read_text().splitlines()]


def alert_log(folder: Path) -> list[dict]:
    return [r for r in log_lines(folder) if r["type"] == "alert"]


def pictures(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.jpg"))


def test_a_raised_alert_saves_its_frame_and_face_and_every_alert_is_logged(tmp_path: Path) -> None:
    results = verdict_sequence(NOISY_FAKE_THEN_REAL)
    sink = SnapshotSink(tmp_path / "snaps", OPTIONS, keep=10, provenance=PROVENANCE)
    run_sink(sink, results)
    records = alert_log(tmp_path / "snaps")
    assert [(r["alert"], r["reason"]) for r in records] == [(RAISED, REASON_FAKE), (CLEARED, REASON_REAL)]
    raised, cleared = records
    assert "frame_image" not in cleared and "face_image" not in cleared
    assert pictures(tmp_path / "snaps") == sorted([raised["frame_image"], raised["face_image"]])
    # each picture's digest, so a copy can be checked unaltered; each record names the model that judged it
    for kind in ("frame", "face"):
        data = (tmp_path / "snaps" / raised[f"{kind}_image"]).read_bytes()
        assert raised[f"{kind}_sha256"] == hashlib.sha256(data).hexdigest()
    for record in records:
        assert {k: record[k] for k in PROVENANCE.to_json()} == PROVENANCE.to_json()
    assert raised["frame_image"].endswith("_face3_frame.jpg") and raised["face_image"].endswith("_face3_face.jpg")

    # the frame is the one the alert was raised on: each scripted frame is a flat grey of its index
    index = round(raised["stream_time_s"] * 10)
    frame = cv2.imread(str(tmp_path / "snaps" / raised["frame_image"]))
    assert frame.shape == (INFO.height, INFO.width, 3)
    assert abs(float(frame.mean()) - index) < 2
    # the face picture is the box [10, 8, 30, 32] grown by a quarter on each side
    crop = cv2.imread(str(tmp_path / "snaps" / raised["face_image"]))
    assert crop.shape[:2] == (36, 30)


def test_face_crop_is_clipped_to_the_frame() -> None:
    image = np.arange(48 * 64 * 3, dtype=np.uint32).reshape(48, 64, 3).astype(np.uint8)
    assert face_crop(image, (-10.0, -10.0, 20.0, 20.0)).shape == (28, 28, 3)
    assert face_crop(image, (50.0, 40.0, 70.0, 60.0)).shape == (13, 19, 3)
    assert np.array_equal(face_crop(image, (8.0, 8.0, 16.0, 16.0), margin=0.0), image[8:16, 8:16])
    # a coasting track's box predicted past the edge still gives a picture to save
    assert face_crop(image, (70.0, 50.0, 90.0, 70.0)).shape == (3, 1, 3)  # rows 45-47 are in the frame
    assert face_crop(image, (-40.0, -40.0, -20.0, -20.0)).shape == (1, 1, 3)


def test_only_the_newest_alerts_pictures_are_kept(tmp_path: Path) -> None:
    folder = tmp_path / "snaps"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "holiday.jpg").write_bytes(b"not ours")
    old = "20000101T000000.000Z_face9"  # an earlier run's alert: counts towards the limit, oldest of all
    for kind in ("_frame", "_face"):
        (folder / f"{old}{kind}.jpg").write_bytes(b"old")
    # three faces, one after the other, each fake long enough to raise an alert
    results = []
    for track in (1, 2, 3):
        results += [result(len(results), (face(track, "fake", score=0.9),)) for _ in range(4)]
    sink = SnapshotSink(folder, OPTIONS, keep=2)
    run_sink(sink, results)
    raised = [r for r in alert_log(folder) if r["alert"] == RAISED]
    assert [r["track_id"] for r in raised] == [1, 2, 3]
    kept = sorted([raised[1]["frame_image"], raised[1]["face_image"], raised[2]["frame_image"],
                   raised[2]["face_image"]] + ["holiday.jpg"])
    assert pictures(folder) == kept
    assert (folder / "notes.txt").read_text() == "mine"
    # each removal is logged, so verify tells them from pictures deleted by hand
    removed = [r for r in log_lines(folder) if r["type"] == "removed"]
    assert [r["files"] for r in removed] == [[f"{old}_frame.jpg", f"{old}_face.jpg"],
                                             [raised[0]["frame_image"], raised[0]["face_image"]]]
    assert all(r["option"] == "--snapshot-keep" and r["keep"] == 2 for r in removed)
    assert all(r["keep"] == 2 for r in raised)
    assert [r["reason"] for r in alert_log(folder) if r["alert"] == CLEARED] == [REASON_END] * 3


def test_an_unwritable_folder_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="--snapshots"):
        SnapshotSink(blocker / "snaps", OPTIONS, keep=5).open(INFO)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = run_cli("demo", "--seconds", "1", "--out-dir", str(tmp_path / "d"), "--snapshots", str(blocker))
    assert bad.returncode == 5 and len(bad.stderr_lines) == 1 and "--snapshots" in bad.stderr
    lonely = run_cli("demo", "--seconds", "1", "--out-dir", str(tmp_path / "d"), "--snapshot-keep", "3")
    assert lonely.returncode == 2 and lonely.stderr_lines == ["stream-guard: error: --snapshot-keep needs --snapshots"]


def test_demo_snapshots_the_self_blended_face(tmp_path: Path) -> None:
    """The shipped model flags the demo's self-blended face within a few seconds: its alert is saved."""
    snaps = tmp_path / "snaps"
    proc = run_cli("demo", "--seconds", "4", "--out-dir", str(tmp_path / "demo"), "--snapshots", str(snaps),
                   timeout=240)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    fake_tracks = {t["track_id"] for t in summary["tracks"] if t["verdict"] == "fake"}
    raised = [r for r in alert_log(snaps) if r["alert"] == RAISED]
    assert raised and {r["track_id"] for r in raised} <= fake_tracks
    first = raised[0]
    assert first["model_sha256"] == model_digest(load_model_spec(default_model_dir()))
    verified = run_cli("verify", str(snaps))  # the evidence checks out, judged by the shipped default model
    assert verified.returncode == 0 and "0 altered, 0 deleted, 0 not in the logs" in verified.stdout, verified.stdout
    assert f"shipped here as '{default_model_dir().name}'" in verified.stdout
    crop = cv2.imread(str(snaps / first["face_image"]))
    x1, y1, x2, y2 = first["box"]
    assert crop.shape[0] == pytest.approx((y2 - y1) * 1.5, abs=3)
    assert cv2.imread(str(snaps / first["frame_image"])).shape[:2] == (720, 1280)


def test_an_alert_whose_pictures_the_disk_refuses_is_logged_without_them(tmp_path: Path) -> None:
    """On a full disk the snapshots output died at its first alert, for the rest of the run. Now each alert
    is tried afresh: the one whose pictures the disk refused is logged saying so, no half picture is left,
    the evidence still verifies, and the run ends saying an alert lost its pictures. The refusal is real:
    a file-size limit (RLIMIT_FSIZE) the demo's 1280x720 frame goes over."""
    import resource
    import subprocess
    import sys

    from tests.conftest import REPO

    snaps = tmp_path / "snaps"
    limit = 40_000  # bytes a file may have
    proc = subprocess.run(
        [sys.executable, "-m", "stream_guard", "watch", "demo", "--max-frames", "120", "--snapshots", str(snaps)],
        capture_output=True, text=True, timeout=240, cwd=REPO,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert proc.returncode == 5, proc.stderr
    assert "cannot save the pictures of face" in proc.stderr and "it is logged without them" in proc.stderr
    raised = [r for r in alert_log(snaps) if r["alert"] == RAISED]
    assert raised and all(r["pictures_lost"] == "File too large" and "frame_image" not in r for r in raised)
    assert sorted(p.name for p in snaps.iterdir()) == [ALERT_LOG]  # no picture, whole or half
    assert proc.stderr.splitlines()[-1] == ("stream-guard: error: output 'snapshots' failed during the run: what it "
                                            "wrote is incomplete (the error is above)")
    verified = run_cli("verify", str(snaps))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{len(raised)} never written (the disk refused them)" in verified.stdout
