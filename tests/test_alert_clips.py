"""Alert clips: an MP4 of the video around each fake alert, on scripted verdicts (each frame a
flat grey of its index, so a decoded frame tells which one it was) and end to end on the demo."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream_guard.config import ModelOptions, OutputOptions, RunConfig, SourceOptions
from stream_guard.errors import OutputError
from stream_guard.outputs.alert_clips import (CLIP_LOG, END_CLEARED, END_MAX_LENGTH, END_OF_STREAM,
                                              END_SOURCE_RESET, END_TIME_RESET, ClipSink, PrerollBuffer)
from stream_guard.outputs.alerts import CLEARED, RAISED, AlertOptions, AlertStateMachine
from stream_guard.outputs.snapshots import ALERT_LOG
from stream_guard.pipeline import Pipeline
from stream_guard.sources.capture import ReconnectPolicy
from stream_guard.sound_bus import SoundFeed
from stream_guard.types import SOUND_RATE, FrameResult, SoundChunk
from stream_guard.outputs.video_file import LIVE_KEYFRAME_S
from tests.conftest import REPO, run_cli
from tests.support.rtsp_fixture import RtspServerProcess, restart_on
from tests.support.alert_frames import INFO, NOISY_FAKE_THEN_REAL, PROVENANCE, face, result, verdict_sequence

OPTIONS = AlertOptions(raise_windows=3, clear_windows=5)
SHADE = 4  # grey levels between frames: H.264 may move a flat grey by a level or two


def shaded(result: FrameResult) -> FrameResult:
    """The frame as grey ``SHADE * index``, far enough from its neighbours to tell them apart."""
    image = np.full_like(result.annotated, SHADE * result.frame.index % 256)
    return replace(result, frame=replace(result.frame, pixels=image), annotated=image)


def feed(sink: ClipSink, items) -> None:
    """Open the sink, hand it frame results and event records, end the run as the pipeline does."""
    sink.open(INFO)
    try:
        for item in items:
            sink.event(item) if isinstance(item, dict) else sink.write(shaded(item))
        sink.event({"type": "summary"})
    finally:
        sink.close()


def clip_log(folder: Path, kind: str = "clip") -> list[dict]:
    """The log's lines of one type: ``clip`` (a clip ended) or ``clip_started``."""
    records = [json.loads(line) for line in (folder / CLIP_LOG).read_text().splitlines()]
    return [r for r in records if r["type"] == kind]


def decoded(path: Path) -> list[tuple[float, int]]:
    """(time in the clip, index of the scripted frame it shows) for every frame of a clip."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(float(f.pts * stream.time_base), round(float(f.to_ndarray(format="gray").mean()) / SHADE))
                for f in container.decode(stream)]


def frames_of(*tracks: list[str]) -> list:
    """Frame results with one face per track; ``tracks[k][i]`` is track k+1's verdict on frame i
    (``-`` = not in the frame)."""
    return [result(i, tuple(face(k + 1, v[i], score=0.9 if v[i] == "fake" else 0.1)
                            for k, v in enumerate(tracks) if v[i] != "-"))
            for i in range(len(tracks[0]))]


def test_a_clip_runs_from_pad_before_the_alert_to_pad_after_it_clears(tmp_path: Path) -> None:
    results = verdict_sequence(NOISY_FAKE_THEN_REAL + ["-"] * 10)
    machine = AlertStateMachine(OPTIONS)
    alerts = [a for r in results for a in machine.update(r)]
    (raised,), (cleared,) = [a for a in alerts if a.kind == RAISED], [a for a in alerts if a.kind == CLEARED]
    first, clear = round(raised.stream_time_s * 10), round(cleared.stream_time_s * 10)

    feed(ClipSink(tmp_path / "clips", OPTIONS, pad_s=0.45, keep=10, provenance=PROVENANCE), results)
    (record,) = clip_log(tmp_path / "clips")
    assert record["track_ids"] == [3] and record["ended"] == END_CLEARED and record["source"] == "test-stream"
    assert record["clip"].endswith("_face3.mp4")
    assert record["sha256"] == hashlib.sha256((tmp_path / "clips" / record["clip"]).read_bytes()).hexdigest()
    assert {k: record[k] for k in PROVENANCE.to_json()} == PROVENANCE.to_json()
    (started,) = clip_log(tmp_path / "clips", "clip_started")  # logged as it opened, by the same name
    assert (started["clip"], started["track_ids"], started["model_sha256"]) == (record["clip"], [3], "0" * 64)
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == [record["clip"], CLIP_LOG]
    shown = decoded(tmp_path / "clips" / record["clip"])
    # 0.45 s of pre-roll = the 4 frames before the raising one; the last frame is the first 0.45 s after the clear
    expected = list(range(first - 4, clear + 5 + 1))
    assert [index for _, index in shown] == expected
    assert [t for t, _ in shown] == pytest.approx([(i - expected[0]) / 10 for i in expected], abs=1e-3)
    assert record["frames"] == len(expected)
    assert (record["start_stream_s"], record["end_stream_s"]) == pytest.approx((expected[0] / 10, expected[-1] / 10))


def test_a_clip_carries_the_sound_of_its_pictures_preroll_included(tmp_path: Path) -> None:
    results = verdict_sequence(NOISY_FAKE_THEN_REAL + ["-"] * 10)
    machine = AlertStateMachine(OPTIONS)
    (raised,) = [a for r in results for a in machine.update(r) if a.kind == RAISED]
    beep_at = raised.stream_time_s - 0.3  # in the pre-roll
    sound = SoundFeed("--clips")
    sink = ClipSink(tmp_path / "clips", OPTIONS, pad_s=0.45, keep=10, sound=sound)
    sink.open(INFO)
    try:
        for r in results:  # the capture thread publishes a picture's sound before the picture is analysed
            t = np.arange(round(0.1 * SOUND_RATE)) / SOUND_RATE + r.frame.pts_s
            wave = np.where((t >= beep_at) & (t < beep_at + 0.05), 0.5 * np.sin(2 * np.pi * 440 * t), 0.0)
            sound.put(SoundChunk(np.stack([wave, wave]).astype(np.float32), r.frame.pts_s))
            sink.write(shaded(r))
    finally:
        sink.close()
    (record,) = clip_log(tmp_path / "clips")
    with av.open(str(tmp_path / "clips" / record["clip"])) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        chunks = [f.to_ndarray()[0] for f in container.decode(audio)]
    wave = np.concatenate(chunks)
    onset = np.flatnonzero(np.abs(wave) > 0.1)[0] / SOUND_RATE
    assert onset == pytest.approx(beep_at - record["start_stream_s"], abs=0.03)
    length = record["end_stream_s"] - record["start_stream_s"] + 0.1  # the last picture lasts a frame
    assert len(wave) / SOUND_RATE == pytest.approx(length, abs=0.12)


def test_overlapping_and_close_alerts_share_one_clip(tmp_path: Path) -> None:
    one = ["fake"] * 4 + ["real"] * 5 + ["-"] * 5 + ["fake"] * 3 + ["real"] * 5 + ["-"] * 28
    two = ["real"] * 5 + ["fake"] * 3 + ["real"] * 5 + ["-"] * 37
    three = ["-"] * 40 + ["fake"] * 3 + ["-"] * 7
    feed(ClipSink(tmp_path, OPTIONS, pad_s=1.0, keep=10), frames_of(one, two, three))
    first, second = clip_log(tmp_path)
    # face 1 raised at frame 2, face 2 at 7, face 1 cleared at 8, face 2 at 12, face 1 raised again at 16
    # (inside the 1 s after the clearing) and cleared at 21: one clip, ending 1 s later
    assert first["track_ids"] == [1, 2] and first["ended"] == END_CLEARED
    assert [i for _, i in decoded(tmp_path / first["clip"])] == list(range(0, 32))
    # face 3, raised at frame 42, long after: a clip of its own, whose pre-roll starts at frame 32
    assert second["track_ids"] == [3] and second["ended"] == END_OF_STREAM
    assert [i for _, i in decoded(tmp_path / second["clip"])] == list(range(32, 50))


def test_a_long_alert_is_continued_in_a_new_clip(tmp_path: Path) -> None:
    feed(ClipSink(tmp_path, OPTIONS, pad_s=0.2, keep=10, max_s=1.0), frames_of(["fake"] * 30))
    records = clip_log(tmp_path)
    assert [r["ended"] for r in records] == [END_MAX_LENGTH, END_MAX_LENGTH, END_OF_STREAM]
    assert [r["track_ids"] for r in records] == [[1]] * 3
    assert len({r["clip"] for r in records}) == 3  # started within a millisecond, still named apart
    # 1 s of stream time each, no frame lost or repeated between them
    assert [[i for _, i in decoded(tmp_path / r["clip"])] for r in records] == [
        list(range(0, 11)), list(range(11, 22)), list(range(22, 30))]
    # a continuation that the end of the stream leaves without a frame leaves no file and no record
    feed(ClipSink(tmp_path / "short", OPTIONS, pad_s=0.2, keep=10, max_s=1.0), frames_of(["fake"] * 11))
    (record,) = clip_log(tmp_path / "short")
    assert sorted(p.name for p in (tmp_path / "short").iterdir()) == [record["clip"], CLIP_LOG]


def test_a_dropped_source_or_a_clock_going_back_closes_the_clip(tmp_path: Path) -> None:
    before = frames_of(["fake"] * 8)
    after = frames_of(["real"] * 2 + ["fake"] * 6)  # stream time starts again at 0
    feed(ClipSink(tmp_path / "drop", OPTIONS, pad_s=1.0, keep=10),
         before + [{"type": "source", "state": "reconnecting"}] + after)
    feed(ClipSink(tmp_path / "jump", OPTIONS, pad_s=1.0, keep=10), before + after)
    for folder, reason in ((tmp_path / "drop", END_SOURCE_RESET), (tmp_path / "jump", END_TIME_RESET)):
        first, second = clip_log(folder)
        assert first["ended"] == reason and second["ended"] == END_OF_STREAM
        assert [i for _, i in decoded(folder / first["clip"])] == list(range(0, 8))
        # the second clip holds nothing from before the gap: after a drop the face is raised anew
        # (frame 4) with a pre-roll of this side only; after a jump its alert is still open and
        # the clip goes on in a new file
        assert [i for _, i in decoded(folder / second["clip"])] == list(range(0, 8))


def test_only_the_newest_clips_are_kept(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "holiday.mp4").write_bytes(b"not ours")
    (tmp_path / "20000101T000000.000Z_face9.mp4").write_bytes(b"an earlier run's clip")
    verdicts = (["fake"] * 3 + ["-"] * 30) * 3
    feed(ClipSink(tmp_path, OPTIONS, pad_s=0.0, keep=2), frames_of(verdicts))
    records = clip_log(tmp_path)
    assert len(records) == 3
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == sorted(["holiday.mp4"] + [r["clip"] for r in records[1:]])
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_frames_of_another_size_are_scaled_into_the_clip(tmp_path: Path) -> None:
    results = frames_of(["fake"] * 6)
    results += [result(6 + i, (face(1, "fake", score=0.9),), width=32, height=24) for i in range(3)]
    feed(ClipSink(tmp_path, OPTIONS, pad_s=1.0, keep=10), results)
    (record,) = clip_log(tmp_path)
    with av.open(str(tmp_path / record["clip"])) as container:
        sizes = {(f.width, f.height) for f in container.decode(video=0)}
    assert sizes == {(INFO.width, INFO.height)} and record["frames"] == 9


def test_bad_options_and_folders(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="--clips"):
        ClipSink(blocker / "clips", OPTIONS, pad_s=1.0, keep=5).open(INFO)
    out = str(tmp_path / "d")
    bad = run_cli("demo", "--seconds", "1", "--out-dir", out, "--clips", str(blocker))
    assert bad.returncode == 5 and len(bad.stderr_lines) == 1 and "--clips" in bad.stderr
    lonely = run_cli("demo", "--seconds", "1", "--out-dir", out, "--clip-keep", "3")
    assert lonely.returncode == 2 and lonely.stderr_lines == ["stream-guard: error: --clip-keep needs --clips"]
    long_pad = run_cli("demo", "--seconds", "1", "--out-dir", out, "--clips", str(tmp_path / "c"), "--clip-pad", "61")
    assert long_pad.returncode == 2 and "--clip-pad" in long_pad.stderr_lines[-1]


def test_demo_clips_the_self_blended_face(tmp_path: Path) -> None:
    """The shipped model raises an alert on the demo's self-blended face; its clip starts the pad
    before the alert (the snapshot log, from the same run, says when it was raised)."""
    evidence = tmp_path / "evidence"
    proc = run_cli("demo", "--seconds", "4", "--out-dir", str(tmp_path / "demo"), "--clips", str(evidence),
                   "--clip-pad", "0.5", "--snapshots", str(evidence), timeout=240)
    assert proc.returncode == 0, proc.stderr
    raised = [json.loads(line) for line in (evidence / ALERT_LOG).read_text().splitlines()]
    raised = [r for r in raised if r["alert"] == RAISED]
    records = clip_log(evidence)
    assert raised and len(records) >= 1
    record = records[0]
    assert record["track_ids"][0] == raised[0]["track_id"]
    assert record["model_sha256"] == raised[0]["model_sha256"] and record["threshold"] == raised[0]["threshold"]
    assert record["sha256"] == hashlib.sha256((evidence / record["clip"]).read_bytes()).hexdigest()
    assert record["start_stream_s"] == pytest.approx(raised[0]["stream_time_s"] - 0.5, abs=0.05)
    with av.open(str(evidence / record["clip"])) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (1280, 720)
        frames = list(container.decode(stream))
    assert len(frames) == record["frames"]
    span = float((frames[-1].pts - frames[0].pts) * stream.time_base)
    assert span == pytest.approx(record["end_stream_s"] - record["start_stream_s"], abs=0.002)
    assert float(np.mean(frames[-1].to_ndarray(format="gray"))) > 0


def test_a_live_stream_that_drops_ends_its_clip_and_the_next_starts_after_the_gap(
        two_faces_clip: Path, placeholder_model: Path, tmp_path: Path) -> None:
    """A real RTSP stream whose server dies mid-alert and comes back. Threshold 0 makes every
    scored face fake, so the untrained model raises alerts at once on both sides of the gap."""
    reached = threading.Event()
    processed = 0

    def count(_result: FrameResult) -> None:
        nonlocal processed
        processed += 1
        if processed == 30:
            reached.set()

    with RtspServerProcess(two_faces_clip) as server:
        restarted = restart_on(server, reached)
        # 150 frames: each connection starts with a burst of frames buffered while it opened, and a live
        # queue drops all but the newest of those (about 25 each time), so the run must read enough past the gap
        config = RunConfig(
            source=SourceOptions(server.url, max_frames=150, reconnect=ReconnectPolicy(initial_s=0.1, max_s=0.5)),
            model=ModelOptions(model_dir=placeholder_model, threshold=0.0),
            outputs=OutputOptions(clips=tmp_path, clip_pad_s=0.5))
        pipeline = Pipeline(config, on_result=count)
        summary = pipeline.run()
        assert restarted.wait(30)
    assert summary.error is None and summary.failed_outputs == ()
    assert "reconnecting" in [e["state"] for e in pipeline.stats.source_events]
    records = clip_log(tmp_path)
    assert [r["ended"] for r in records] == [END_SOURCE_RESET, END_OF_STREAM]
    before, after = records
    assert after["start_stream_s"] < before["end_stream_s"]  # the stream's clock started again
    assert not set(before["track_ids"]) & set(after["track_ids"])  # faces are new after the gap
    for record in records:
        with av.open(str(tmp_path / record["clip"])) as container:
            assert sum(1 for _ in container.decode(video=0)) == record["frames"] > 0


KILLED_CLIP_WRITER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from stream_guard.outputs.alert_clips import ClipSink
from tests.support.alert_frames import INFO
from tests.test_alert_clips import OPTIONS, frames_of, shaded
sink = ClipSink(Path({folder!r}), OPTIONS, pad_s=0.5, keep=10)
sink.open(INFO)
for r in frames_of(["fake"] * {frames}):
    sink.write(shaded(r))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_clip_of_a_killed_live_run_still_plays(tmp_path: Path) -> None:
    """A run killed while an alert's clip is open leaves ``NAME.mp4.part``, written as it went:
    it holds the clip up to its last keyframe interval (INFO is a live 10 fps stream)."""
    n = 60  # the alert is raised at frame 2; greys up to 236
    code = KILLED_CLIP_WRITER.format(repo=str(REPO), folder=str(tmp_path), frames=n)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (part,) = tmp_path.glob("*_face1.mp4.part")
    shown = [index for _, index in decoded(part)]
    assert shown == list(range(len(shown))) and len(shown) >= n - round(LIVE_KEYFRAME_S * INFO.fps) - 1
    # the log knows the unfinished clip, so one renamed to keep it (as the README says) is not taken for a plant
    assert [r["clip"] for r in clip_log(tmp_path, "clip_started")] == [part.name.removesuffix(".part")]
    assert clip_log(tmp_path) == []
    part.rename(part.with_suffix(""))
    verified = run_cli("verify", str(tmp_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 not in the logs" in verified.stdout and "1 unfinished clip" in verified.stdout


def test_the_preroll_keeps_its_newest_frame_exact_and_compresses_only_older_ones(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, 64)[None, :, None]
    images = [np.clip(ramp + rng.normal(0, 8, (48, 64, 3)), 0, 255).astype(np.uint8)  # noise: JPEG changes it
              for _ in range(12)]
    preroll = PrerollBuffer(0.25)
    for i, image in enumerate(images):
        preroll.push(i / 10, image)
    kept = list(preroll.frames())
    assert [t for t, _ in kept] == pytest.approx([0.9, 1.0, 1.1])  # the last 0.25 s of stream time
    assert kept[-1][1] is images[-1]
    assert all(0 < np.abs(rgb.astype(int) - images[9 + k]).mean() < 12 for k, (_, rgb) in enumerate(kept[:-1]))

    def no_compression(*args):
        raise AssertionError("a pre-roll of 0 s compressed a frame")

    monkeypatch.setattr(cv2, "imencode", no_compression)
    preroll = PrerollBuffer(0.0)
    for i, image in enumerate(images):
        preroll.push(i / 10, image)
    assert [(t, rgb is images[-1]) for t, rgb in preroll.frames()] == [(pytest.approx(1.1), True)]
    preroll.clear()
    assert list(preroll.frames()) == []


def test_a_clip_the_disk_refuses_is_given_up_and_the_next_alert_gets_its_own(tmp_path: Path) -> None:
    """On a full disk the clips output died with its first clip, for the rest of the run. Now that clip is
    given up (no half file left, a ``clip_lost`` line says so) and the next alert gets a clip of its own. The
    refusal is real: a file-size limit (RLIMIT_FSIZE) that the first clip, six seconds of a face, goes over
    and the second, one second of another, does not."""
    import resource

    from tests.support.faces import one_face_moving
    from tests.support.synth_video import make_test_clip

    face = one_face_moving(320, 240, face_px=150)
    video = make_test_clip(tmp_path / "twice.mp4", seconds=10.0, width=320, height=240, fps=10,
                           draw=lambda i: face(i) if i < 60 or 80 <= i < 90 else np.full((240, 320, 3), 90, np.uint8))
    clips = tmp_path / "clips"
    limit = 50_000  # bytes a file may have: the clips run about 108 and 32 kB
    proc = subprocess.run(
        [sys.executable, "-m", "stream_guard", "watch", str(video), "--threshold", "0.01", "--alert-raise", "1",
         "--clips", str(clips), "--clip-pad", "0.5"],
        capture_output=True, text=True, timeout=240, cwd=REPO,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.count("it is given up; the next alert gets a clip of its own") == 1, proc.stderr
    assert "1 clip(s) or their log lines could not be written" in proc.stderr
    started, lost, ended = (clip_log(clips, kind) for kind in ("clip_started", "clip_lost", "clip"))
    assert len(started) == 2 and [r["clip"] for r in lost] == [started[0]["clip"]]
    assert "File too large" in lost[0]["error"]
    assert [r["clip"] for r in ended] == [started[1]["clip"]] and ended[0]["track_ids"] != lost[0]["track_ids"]
    assert sorted(p.name for p in clips.iterdir()) == sorted([ended[0]["clip"], CLIP_LOG])  # no half file
    verified = run_cli("verify", str(clips))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 file(s) intact, 0 altered, 0 deleted, 0 not in the logs, 0 removed" in verified.stdout
    assert "1 never written (the disk refused them)" in verified.stdout
