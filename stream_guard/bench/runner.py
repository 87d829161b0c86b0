"""Run the real pipeline on one scenario and collect what it measured."""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from stream_guard.bench.clips import write_clip
from stream_guard.bench.timing import ThreadCpuSampler, TimedSink, percentile, stage_stats
from stream_guard.config import AnalysisOptions, ModelOptions, RunConfig, SourceOptions
from stream_guard.outputs.video_file import VideoFileSink
from stream_guard.pipeline import Pipeline, RunSummary
from stream_guard.sources.tone_map import TRC_HLG
from stream_guard.types import FrameResult

STAGES = ("decode", "detect", "track", "crop", "cnn", "temporal", "overlay", "encode")


@dataclass(frozen=True, slots=True)
class Scenario:
    """A generated clip and how it is played: ``live`` = paced at its frame rate with a
    drop-oldest queue (a late frame is skipped, never waited for); else as fast as possible."""

    name: str
    width: int
    height: int
    fps: int
    faces: int
    live: bool
    encode: bool  # write the annotated video (H.264), as `watch --out` does
    description: str
    hdr_transfer: int | None = None  # coded as 10-bit HDR of this transfer (16 PQ, 18 HLG), tone-mapped when read


SCENARIOS = MappingProxyType({s.name: s for s in (
    Scenario("live-720p", 1280, 720, 30, 1, True, True, "720p30 live (paced, drop-oldest), 1 face, --out encode"),
    Scenario("live-1080p-4faces", 1920, 1080, 30, 4, True, True,
             "1080p30 live (paced, drop-oldest), 4 faces, --out encode"),
    Scenario("live-1080p-hlg", 1920, 1080, 30, 1, True, False,
             "1080p30 live (paced, drop-oldest) coded as 10-bit HLG, 1 face, no video out", TRC_HLG),
    Scenario("file-720p", 1280, 720, 30, 1, False, False, "720p file as fast as possible, 1 face, no video out"),
    Scenario("file-1080p", 1920, 1080, 30, 1, False, False, "1080p file as fast as possible, 1 face, no video out"),
    Scenario("file-1080p-hlg", 1920, 1080, 30, 1, False, False,
             "file-1080p's clip coded as 10-bit HLG, so every frame is tone-mapped", TRC_HLG),
    Scenario("smoke", 360, 480, 30, 1, False, True, "tiny 360x480 file, 1 face (for tests)"),
)})
DEFAULT_SCENARIOS = ("live-720p", "live-1080p-4faces", "file-720p")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)


@dataclass(slots=True)
class _Collector:
    """Filled on the analysis thread through ``Pipeline(on_result=...)``."""

    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES if s != "encode"})
    latencies: list[float] = field(default_factory=list)
    out_times: list[float] = field(default_factory=list)
    pts: list[float] = field(default_factory=list)  # stream time of each analysed frame
    with_face: int = 0
    tracks: dict[int, list[float]] = field(default_factory=dict)  # id -> [first, last scored pts, n_scored]

    def __call__(self, r: FrameResult) -> None:
        self.out_times.append(time.perf_counter())
        self.pts.append(r.frame.pts_s)
        self.latencies.append(r.latency_ms)
        t = r.times
        decode_ms = r.frame.decode_ms + r.frame.convert_ms  # wherever the conversion ran
        for name, value in (("decode", decode_ms), ("detect", t.detect_ms), ("track", t.track_ms),
                            ("crop", t.crop_ms), ("cnn", t.cnn_ms), ("temporal", t.temporal_ms),
                            ("overlay", t.overlay_ms)):
            self.stages[name].append(value)
        self.with_face += bool(r.faces)
        for face in r.faces:
            if face.scored:
                entry = self.tracks.setdefault(face.track_id, [r.frame.pts_s, r.frame.pts_s, 0])
                entry[1] = r.frame.pts_s
                entry[2] += 1

    def face_rates(self, min_span_s: float = 0.5) -> dict[str, float]:
        """Scores per second of stream time for each face scored over at least ``min_span_s``."""
        return {str(tid): round((n - 1) / (last - first), 2) for tid, (first, last, n) in sorted(self.tracks.items())
                if last - first >= min_span_s and n > 1}


def run_scenario(scenario: Scenario, seconds: float, work: Path, model_dir: Path | None, provider: str,
                 detect_every: int | None, source: str | None = None, encode: bool | None = None) -> dict:
    """Generate the clip (unless ``source``), run the pipeline on it, return the report dict."""
    max_frames = None if source is None else max(1, round(seconds * scenario.fps))  # a stream may never end
    if source is None:
        source = str(write_clip(work / f"{scenario.name}.mp4", scenario.width, scenario.height, scenario.fps,
                                seconds, scenario.faces, scenario.hdr_transfer))
    encode = scenario.encode if encode is None else encode
    analysis = AnalysisOptions() if detect_every is None else AnalysisOptions(detect_every=detect_every)
    config = RunConfig(source=SourceOptions(spec=source, realtime=scenario.live, drop_oldest=scenario.live,
                                            max_frames=max_frames),
                       model=ModelOptions(model_dir=model_dir, provider=provider), analysis=analysis)
    sinks = [TimedSink(VideoFileSink(work / f"{scenario.name}-out.mp4"))] if encode else []
    collect = _Collector()
    sampler = ThreadCpuSampler()
    sampler.start()
    try:
        summary = Pipeline(config, extra_sinks=sinks, on_result=collect).run()
    finally:
        cpu = sampler.finish()
    return _report(scenario, source, summary, collect, sinks, cpu, analysis.detect_every)


def _report(scenario: Scenario, source: str, summary: RunSummary, c: _Collector, sinks: list[TimedSink],
            cpu: dict[str, float], detect_every: int) -> dict:
    n = summary.frames_processed
    span = c.out_times[-1] - c.out_times[0] if len(c.out_times) > 1 else 0.0
    fps = (len(c.out_times) - 1) / span if span > 0 else 0.0
    stages = {name: stage_stats(values, n) for name, values in c.stages.items()}
    stages["encode"] = stage_stats(sinks[0].write_ms if sinks else [], n)
    rates = c.face_rates()
    return {
        "scenario": scenario.name, "description": scenario.description, "source": source,
        "width": scenario.width, "height": scenario.height, "source_fps": scenario.fps, "faces": scenario.faces,
        "live": scenario.live, "encode": bool(sinks), "detect_every": detect_every,
        "detect_share": round(stages["detect"]["runs"] / max(1, n), 3),
        "frames_read": summary.frames_read, "frames_processed": n, "frames_dropped": summary.frames_dropped,
        "frames_with_face_share": round(c.with_face / max(1, n), 4),
        "fps": round(fps, 2), "realtime_ratio": round(fps / scenario.fps, 2),
        # a live source's analysis that falls behind the stream: this much more time passed than stream time
        "behind_s": round(span - (c.pts[-1] - c.pts[0]), 2) if scenario.live and len(c.pts) > 1 else None,
        "latency_ms": {"p50": percentile(c.latencies, 50), "p95": percentile(c.latencies, 95)},
        "stages_ms": stages,
        "face_score_hz": {"min": min(rates.values()) if rates else None, "per_face": rates},
        "cpu_s": cpu, "cpu_ms_per_frame": round(sum(cpu.values()) * 1e3 / n, 2) if cpu and n else None,
        "wall_s": round(span, 3), "peak_rss_mb": peak_rss_mb(),
        "model": summary.provenance.model, "model_trained": summary.provenance.model_trained,
        "provider": summary.provider,
    }
