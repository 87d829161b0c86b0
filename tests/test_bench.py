"""``stream-guard bench``: runs the real pipeline on a generated clip and ends with one JSON line.
No timing assertions: the figures depend on the machine and its load."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import av
import numpy as np

from stream_guard.bench.baseline import build_lstm, build_resnext50
from stream_guard.bench.clips import write_clip
from stream_guard.bench.runner import SCENARIOS, STAGES
from tests.conftest import run_cli
from tests.support.rtsp_fixture import RtspServerProcess
from tests.support.synth_video import make_test_clip

SCENARIO_KEYS = {"scenario", "width", "height", "source_fps", "faces", "live", "encode", "detect_every",
                 "detect_share", "frames_read", "frames_processed", "frames_dropped", "frames_with_face_share",
                 "fps", "realtime_ratio", "behind_s", "latency_ms", "stages_ms", "face_score_hz", "cpu_s",
                 "cpu_ms_per_frame", "peak_rss_mb", "model", "model_trained", "provider"}


def test_bench_smoke_prints_json_last(placeholder_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = run_cli("bench", "--scenario", "smoke", "--seconds", "1", "--no-baseline", "--model", str(placeholder_model),
                "--json", str(out), timeout=180)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"bench", "date", "machine", "model", "stages", "scenarios", "baseline"} <= set(report)
    assert report["model"]["name"] == "untrained-placeholder" and report["baseline"] is None
    (s,) = report["scenarios"]
    assert SCENARIO_KEYS <= set(s)
    assert set(s["stages_ms"]) == set(STAGES)
    assert s["frames_processed"] == s["frames_read"] == 30  # a file loses no frame
    assert s["behind_s"] is None  # only said of a live source
    assert s["stages_ms"]["decode"]["runs"] == 30 and s["stages_ms"]["encode"]["runs"] == 30
    assert s["stages_ms"]["cnn"]["runs"] > 0 and s["stages_ms"]["temporal"]["runs"] > 0  # both timed now
    assert s["frames_with_face_share"] > 0.5 and s["face_score_hz"]["min"] is not None
    assert json.loads(out.read_text()) == report

    piped = run_cli("bench", "--scenario", "smoke", "--seconds", "1", "--no-baseline", "--model",
                    str(placeholder_model), "--json", "-", cwd=tmp_path, timeout=180)
    assert piped.returncode == 0, piped.stderr
    (line,) = piped.stdout.splitlines()  # the JSON line alone; the table went to stderr
    assert json.loads(line)["scenarios"][0]["frames_processed"] == 30 and "smoke:" in piped.stderr
    assert not (tmp_path / "-").exists()


def test_bench_bad_option_is_one_line(placeholder_model: Path) -> None:
    r = run_cli("bench", "--scenario", "smoke", "--seconds", "0", "--model", str(placeholder_model))
    assert r.returncode == 2
    assert r.stderr_lines == ["stream-guard: error: --seconds must be positive"]


def test_baseline_graphs_have_resnext50_shape() -> None:
    """Built without PyTorch: ~23M CNN parameters (ResNeXt-50 32x4d without its classifier), grouped convs."""
    cnn = build_resnext50(np.random.default_rng(0))
    params = sum(int(np.prod(t.dims)) for t in cnn.graph.initializer)
    assert 22_000_000 < params < 24_000_000
    groups = [a.i for n in cnn.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert groups.count(32) == 16  # one grouped 3x3 per bottleneck block: 3 + 4 + 6 + 3
    lstm = build_lstm(np.random.default_rng(0))
    assert [n.op_type for n in lstm.graph.node][0] == "LSTM"


def test_baseline_runs_in_onnx_runtime(tmp_path: Path) -> None:
    from stream_guard.bench.baseline import run_baseline

    frames = (np.full((360, 640, 3), i, np.uint8) for i in range(10))
    result = run_baseline(frames, max_seconds=0.0, folder=tmp_path, min_frames=2)
    assert result.frames == 2 and result.fps > 0
    assert {"model", "fps", "ms_per_frame", "cpu_ms_per_frame"} <= set(result.to_json())


def test_auto_detect_schedule_thins_out_tiled_frames_only(placeholder_model: Path) -> None:
    from stream_guard.analysis import AUTO_TILED_DETECT_EVERY, Analyzer
    from stream_guard.faces.detector import FaceDetector
    from stream_guard.faces.tracker import FaceTracker, TrackerOptions
    from stream_guard.model.contract import load_model_spec
    from stream_guard.model.scorer import FaceScorer

    scorer = FaceScorer(load_model_spec(placeholder_model), ["CPUExecutionProvider"])
    detector = FaceDetector()
    auto = Analyzer(detector, FaceTracker(TrackerOptions(), scorer.new_memory), scorer, detect_every=0)
    assert auto.detect_interval(1280, 720) == 1
    assert auto.detect_interval(1920, 1080) == AUTO_TILED_DETECT_EVERY
    fixed = Analyzer(detector, FaceTracker(TrackerOptions(), scorer.new_memory), scorer, detect_every=2)
    assert fixed.detect_interval(1920, 1080) == fixed.detect_interval(640, 360) == 2


def test_the_hlg_scenario_is_file_1080p_coded_as_hlg_and_read_tone_mapped(tmp_path: Path) -> None:
    plain, hlg = SCENARIOS["file-1080p"], SCENARIOS["file-1080p-hlg"]
    assert replace(hlg, name=plain.name, description=plain.description, hdr_transfer=None) == plain
    clip = write_clip(tmp_path / "hlg.mp4", 320, 240, 30, 0.3, 1, hlg.hdr_transfer)
    with av.open(str(clip)) as container:
        context = container.streams.video[0].codec_context
        assert (context.pix_fmt, context.color_trc, context.colorspace) == ("yuv420p10le", 18, 9)
    read = run_cli("-v", "watch", str(clip))
    assert read.returncode == 0 and "HDR video (HLG transfer): tone-mapped" in read.stderr, read.stderr


def test_bench_of_a_live_stream_says_how_far_behind_it_is(placeholder_model: Path, tmp_path: Path) -> None:
    """``--source`` with a live stream (a real RTSP server): read as a live run reads it, and ``behind_s``
    says whether the machine kept up."""
    clip = make_test_clip(tmp_path / "c.mp4", seconds=2.0, width=320, height=240, fps=30)
    with RtspServerProcess(clip) as server:
        r = run_cli("bench", "--source", server.url, "--seconds", "1", "--no-baseline", "--model",
                    str(placeholder_model), timeout=180)
    assert r.returncode == 0, r.stderr
    (s,) = json.loads(r.stdout.strip().splitlines()[-1])["scenarios"]
    assert s["live"] and s["frames_read"] == 30
    assert isinstance(s["behind_s"], float) and "s behind the stream at the end" in r.stdout
