"""The pipeline on a real RTSP stream served on 127.0.0.1 by a server the test starts."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from stream_guard.config import ModelOptions, RunConfig, SourceOptions
from stream_guard.pipeline import Pipeline
from stream_guard.sources.capture import ReconnectPolicy
from tests.conftest import run_cli
from tests.support.rtsp_fixture import RtspServerProcess, restart_on


def test_rtsp_round_trip_through_the_cli(two_faces_clip: Path, placeholder_model: Path, tmp_path: Path) -> None:
    events = tmp_path / "ev.jsonl"
    with RtspServerProcess(two_faces_clip, auth="viewer:hunter2") as server:
        url = server.url_with_credentials("viewer", "hunter2")
        result = run_cli("watch", url, "--max-frames", "60", "--events", str(events),
                         "--model", str(placeholder_model), "-v", timeout=90)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stderr and "hunter2" not in events.read_text()
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert records[0]["type"] == "start" and records[0]["live"] is True
    summary = records[-1]
    assert summary["type"] == "summary" and summary["frames_read"] == 60
    # a live source drops the oldest frame when the machine is busy: every frame is accounted for
    assert summary["frames_processed"] + summary["frames_dropped"] == 60 and summary["frames_processed"] >= 5
    # both faces are found (id stability is tested on files, where no frame is dropped)
    assert len({r["track_id"] for r in records if r["type"] == "track"}) >= 2


def test_an_h265_camera_stream_is_watched(placeholder_model: Path, tmp_path: Path) -> None:
    """Most IP cameras now send H.265 (RFC 7798 over RTP): the server sends the clip as such,
    parameter sets in the SDP and before each keyframe, large pictures in fragmentation units."""
    from tests.support.faces import two_faces_passing
    from tests.support.rtsp_server import build_sdp, load_clip
    from tests.support.synth_video import make_test_clip

    clip = make_test_clip(tmp_path / "camera_h265.mp4", seconds=3.0, fps=30, draw=two_faces_passing(n_frames=90),
                          codec="hevc")
    sdp = build_sdp(load_clip(str(clip)), "127.0.0.1")
    assert "a=rtpmap:96 H265/90000" in sdp and "sprop-vps=" in sdp
    events = tmp_path / "ev.jsonl"
    with RtspServerProcess(clip) as server:
        result = run_cli("watch", server.url, "--max-frames", "60", "--events", str(events),
                         "--model", str(placeholder_model), timeout=90)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert records[0]["width"] == 640 and records[0]["live"] is True
    summary = records[-1]
    assert summary["frames_read"] == 60 and summary["frames_processed"] >= 5
    assert len({r["track_id"] for r in records if r["type"] == "track"}) >= 2


def test_live_run_survives_a_dropped_stream(two_faces_clip: Path, placeholder_model: Path) -> None:
    """The server dies mid-stream and comes back: the run reconnects, resets its tracks,
    reports both state changes, and keeps going."""
    processed = 0
    reached_30 = threading.Event()
    with RtspServerProcess(two_faces_clip) as server:
        restarted = restart_on(server, reached_30)

        def on_result(result) -> None:
            nonlocal processed
            processed += 1
            if processed == 30:
                reached_30.set()

        config = RunConfig(source=SourceOptions(server.url, max_frames=90,
                                                reconnect=ReconnectPolicy(initial_s=0.1, max_s=0.5)),
                           model=ModelOptions(model_dir=placeholder_model))
        pipeline = Pipeline(config, on_result=on_result)
        summary = pipeline.run()
        restarted.wait(30)
    states = [e["state"] for e in pipeline.stats.source_events]
    assert restarted.is_set()
    assert "reconnecting" in states and states[-1] == "connected"
    assert summary.error is None and summary.frames_read == 90
    # frames that arrive in a burst after reconnecting are dropped on purpose (live policy)
    assert summary.frames_processed + summary.frames_dropped == 90 and summary.frames_processed >= 30
    assert len(summary.tracks) >= 4  # tracks were reset across the gap: new ids after reconnecting


def test_a_stalled_stream_counts_its_downtime_from_its_last_frame(two_faces_clip: Path,
                                                                  placeholder_model: Path) -> None:
    """A camera that stops sending without closing the connection (frozen, its network gone): the drop is
    noticed when the read times out, and ``downtime_s`` counted from then said 5.6 s of a 15.8 s outage;
    its reason was FFmpeg's "Immediate exit requested". Then the picture the depacketizer held back, released
    by that time-out, was taken as the last frame: the outage counted 5 s short, and noticed after 10 s."""
    import signal

    processed = 0
    first_frames = threading.Event()
    with RtspServerProcess(two_faces_clip) as server:
        def on_result(result) -> None:
            nonlocal processed
            processed += 1
            if processed == 20:
                first_frames.set()

        config = RunConfig(source=SourceOptions(server.url, reconnect=ReconnectPolicy(initial_s=0.1, max_s=0.5)),
                           model=ModelOptions(model_dir=placeholder_model))
        pipeline = Pipeline(config, on_result=on_result)
        runner = threading.Thread(target=pipeline.run)
        runner.start()
        try:
            assert first_frames.wait(60), "the stream did not get going"
            server._proc.send_signal(signal.SIGSTOP)  # frozen: the connection stays open, nothing comes
            stalled_at, stalled_unix = time.monotonic(), time.time()
            time.sleep(12.0)
            server._proc.send_signal(signal.SIGCONT)
            stall_s = time.monotonic() - stalled_at
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                    e["state"] == "connected" and e["downtime_s"] for e in pipeline.stats.source_events):
                time.sleep(0.2)
        finally:
            pipeline.stop()
            runner.join(60)
    events = pipeline.stats.source_events
    reconnecting = [e for e in events if e["state"] == "reconnecting"]
    (back,) = [e for e in events if e["state"] == "connected" and e["downtime_s"]][:1]
    assert reconnecting and "no data came for 5 s" in reconnecting[0]["detail"], reconnecting
    # the 5 s the read waited before the drop was noticed are part of the outage (frames the server had
    # already sent still came after it froze, so it is no longer than the freeze)
    noticed_s = back["wall_time"] - reconnecting[0]["wall_time"]
    assert noticed_s + 4.0 <= back["downtime_s"] <= stall_s + 1.0, (back, noticed_s, stall_s)
    # noticed at the first time-out, and counted from the frames before the freeze (those already on their
    # way when it froze came after it, so up to a second less)
    assert reconnecting[0]["wall_time"] - stalled_unix < 7.0, (reconnecting[0], stalled_unix)
    assert back["downtime_s"] >= back["wall_time"] - stalled_unix - 1.0, (back, stalled_unix)
