"""Soak test: run the live pipeline for N minutes and watch for leaks.

    python -m tools.soak --minutes 10 [--interval 30] [--restart-every 120] [--out-dir DIR] [--out-segment S]
                         [--all-outputs]

The source is the repository's RTSP test server (tests/support) looping a synthetic
640x360 face clip, read through the normal live path (drop-oldest queue, reconnect).
Every ``--interval`` seconds it prints RSS, thread count, queue depths and frame
counters; at the end one verdict line: RSS growth after warm-up (%) and whether the
thread count stayed constant. Exit code 0 when RSS growth <= ``--max-growth`` and the
thread count is constant, 1 otherwise. With ``--out-segment S`` the recording is split as
``watch --out-segment`` splits it, and a second line reports the segment files: how many, their
frames, and the video time they hold against the run's wall time.

``--all-outputs`` also runs the outputs that keep state between alerts, under churn: every face is judged
fake (threshold 0) and the looping clip makes a new face track, so a new alert, about every 10 s; snapshots
and clips are written and pruned (``--snapshot-keep 5``, ``--clip-keep 3``); the live view serves a client
that keeps reading ``/stream.mp4`` and polls ``/api/status`` and ``/metrics``. Threads then come and go with
the clips and the client, so the verdict asks that the thread count does not grow (the last half's peak at
most the first half's) instead of staying constant; and at the end the evidence folders must pass
``stream-guard verify``. Not part of the default test run.
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from stream_guard.config import ModelOptions, OutputOptions, RunConfig, SourceOptions
from stream_guard.outputs.http.options import ServeOptions
from stream_guard.pipeline import Pipeline


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of the process and the pipeline."""

    t_s: float
    rss_mb: float
    threads: int
    capture_queue: int
    detect_queue: int
    sink_queues: tuple[int, ...]
    frames_processed: int
    frames_dropped: int


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def take_sample(pipeline: Pipeline, started: float) -> Sample:
    frames = pipeline.frames
    return Sample(
        t_s=time.monotonic() - started, rss_mb=rss_mb(), threads=threading.active_count(),
        capture_queue=frames.qsize() if frames is not None else 0,
        detect_queue=pipeline.detected.qsize() if pipeline.detected is not None else 0,
        sink_queues=tuple(w.pending() for w in pipeline.workers),
        frames_processed=pipeline.stats.frames_processed,
        frames_dropped=frames.dropped if frames is not None else 0,
    )


def verdict(samples: list[Sample], warmup_s: float, max_growth_pct: float,
            threads_may_vary: bool = False) -> tuple[bool, str]:
    """RSS growth from the first sample after warm-up to the last, and thread-count stability (constant, or
    with ``threads_may_vary`` not growing: the peak of the last half at most that of the first half)."""
    after = [s for s in samples if s.t_s >= warmup_s]
    if len(after) < 2:
        return False, "verdict: FAIL (too few samples after warm-up: run longer or lower --interval)"
    base, last = after[0].rss_mb, after[-1].rss_mb
    growth = 100.0 * (last - base) / base
    peak = max(s.rss_mb for s in after)
    threads = sorted({s.threads for s in after})
    half = len(after) // 2
    threads_ok = len(threads) == 1 or (threads_may_vary and max(s.threads for s in after[half:])
                                       <= max(s.threads for s in after[:half]))
    ok = growth <= max_growth_pct and threads_ok
    return ok, (f"verdict: {'PASS' if ok else 'FAIL'}: RSS after warm-up {base:.1f} -> {last:.1f} MiB "
                f"({growth:+.2f} %, peak {peak:.1f}, limit {max_growth_pct:.1f} %), "
                f"threads {'constant at ' + str(threads[0]) if len(threads) == 1 else 'varied ' + str(threads)}"
                f"{' (not growing)' if threads_ok and len(threads) > 1 else ''}, "
                f"{after[-1].frames_processed} frames processed, {after[-1].frames_dropped} dropped")


def _restarter(server, every_s: float, stop: threading.Event, log: list[str]) -> None:
    """Kill and restart the RTSP server every ``every_s`` seconds (reconnect under soak)."""
    while not stop.wait(every_s):
        server.kill()
        server.start()
        log.append(f"{time.strftime('%H:%M:%S')} server restarted")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveViewClient(threading.Thread):
    """Reads ``/stream.mp4`` as a browser would, reconnecting when it ends, and polls the status and
    metrics every 2 s, until stopped; counts what it got."""

    def __init__(self, base_url: str, stop: threading.Event) -> None:
        super().__init__(name="soak-client", daemon=True)
        self.base_url, self.stop_event = base_url, stop
        self.video_bytes = self.polls = self.failures = 0
        self.errors: Counter[str] = Counter()  # what the failed requests met, by kind
        self.served = False  # whether any request has been answered yet

    def _failed(self, path: str, error: OSError) -> None:
        if not self.served and isinstance(getattr(error, "reason", error), ConnectionRefusedError):
            return  # the live view is not up yet: the run is still loading its models
        self.failures += 1
        self.errors[f"{path}: {type(error).__name__}: {getattr(error, 'reason', error)}"] += 1

    def run(self) -> None:
        import urllib.request

        poller = threading.Thread(target=self._poll, name="soak-poller", daemon=True)
        poller.start()
        while not self.stop_event.is_set():
            try:
                with urllib.request.urlopen(f"{self.base_url}/stream.mp4", timeout=10) as response:
                    self.served = True
                    while not self.stop_event.is_set():
                        chunk = response.read(65536)
                        if not chunk:
                            break
                        self.video_bytes += len(chunk)
            except OSError as e:
                self._failed("/stream.mp4", e)
                self.stop_event.wait(1.0)
        poller.join(5)

    def _poll(self) -> None:
        import urllib.request

        while not self.stop_event.wait(2.0):
            for path in ("/api/status", "/metrics"):
                try:
                    with urllib.request.urlopen(f"{self.base_url}{path}", timeout=5) as response:
                        response.read()
                    self.served = True
                    self.polls += 1
                except OSError as e:
                    self._failed(path, e)


def _all_outputs(outputs: OutputOptions, out_dir: Path) -> tuple[OutputOptions, str]:
    """``outputs`` joined by the stateful outputs under alert churn, and the live view's base URL."""
    port = _free_port()
    outputs = replace(outputs, snapshots=out_dir / "snapshots", snapshot_keep=5, clips=out_dir / "clips", clip_keep=3,
                      clip_pad_s=2.0, serve=ServeOptions(host="127.0.0.1", port=port))
    return outputs, f"http://127.0.0.1:{port}"


def evidence_line(out_dir: Path) -> tuple[bool, str]:
    """What the alert outputs left, and whether ``stream-guard verify`` finds it as written."""
    import io

    from stream_guard.verify_evidence import run_verify

    folders = [out_dir / "snapshots", out_dir / "clips"]
    report = io.StringIO()
    code = run_verify(folders, report)
    records = (out_dir / "snapshots" / "alerts.jsonl").read_text(encoding="utf-8").splitlines()
    pictures = len(list((out_dir / "snapshots").glob("*.jpg")))
    clips = len(list((out_dir / "clips").glob("*.mp4")))
    return code == 0, (f"evidence: {len(records)} alert records (raised and cleared), {pictures} pictures and "
                       f"{clips} clips kept; "
                       f"stream-guard verify: exit {code}" + ("" if code == 0 else "\n" + report.getvalue()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples (default 30)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="warm-up seconds excluded from the verdict (default: 20 %% of the run, at least 60)")
    parser.add_argument("--restart-every", type=float, default=0.0, metavar="S",
                        help="kill and restart the RTSP server every S seconds (default: never)")
    parser.add_argument("--max-growth", type=float, default=5.0, help="RSS growth limit in %% (default 5)")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--out-dir", type=Path, default=None, help="keep soak.mp4 and events.jsonl here")
    parser.add_argument("--out-segment", type=float, default=None, metavar="S",
                        help="record in files of S seconds (soak_<UTC time>.mp4) and report them")
    parser.add_argument("--all-outputs", action="store_true",
                        help="also snapshots, clips and a live view with a client, under alert churn")
    args = parser.parse_args(argv)

    from tests.support.faces import one_face_moving
    from tests.support.rtsp_fixture import RtspServerProcess
    from tests.support.synth_video import make_test_clip

    duration_s = args.minutes * 60.0
    warmup_s = args.warmup if args.warmup is not None else max(60.0, 0.2 * duration_s)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        out_dir = args.out_dir or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        clip = make_test_clip(Path(tmp) / "clip.mp4", seconds=10.0, width=640, height=360, fps=30,
                              draw=one_face_moving(640, 360, face_px=140))
        samples: list[Sample] = []
        restarts: list[str] = []
        with RtspServerProcess(clip) as server:
            outputs = OutputOptions(out_path=out_dir / "soak.mp4", out_segment_s=args.out_segment,
                                    events_path=out_dir / "events.jsonl")
            base_url = None
            if args.all_outputs:
                outputs, base_url = _all_outputs(outputs, out_dir)
            config = RunConfig(source=SourceOptions(server.url), outputs=outputs,
                               model=ModelOptions(model_dir=args.model, threshold=0.0 if args.all_outputs else None))
            pipeline = Pipeline(config)
            done = threading.Event()
            started = time.monotonic()

            def monitor() -> None:
                while not done.wait(args.interval):
                    s = take_sample(pipeline, started)
                    samples.append(s)
                    print(f"[{s.t_s:7.1f} s] rss {s.rss_mb:7.1f} MiB  threads {s.threads:3d}  "
                          f"capture q {s.capture_queue}  detect q {s.detect_queue}  sink q {list(s.sink_queues)}  "
                          f"frames {s.frames_processed}  dropped {s.frames_dropped}", flush=True)
                    if s.t_s >= duration_s:
                        done.set()  # the helpers first: a client reading as the live view closes is no failure
                        pipeline.stop()
                        return

            helpers = [threading.Thread(target=monitor, name="soak-monitor", daemon=True)]
            if args.restart_every > 0:
                helpers.append(threading.Thread(target=_restarter, name="soak-restarter", daemon=True,
                                                args=(server, args.restart_every, done, restarts)))
            client = LiveViewClient(base_url, done) if base_url else None
            if client is not None:
                helpers.append(client)
            for h in helpers:
                h.start()
            try:
                summary = pipeline.run()
            finally:
                done.set()
                for h in helpers:
                    h.join(30)
        p50, p95 = (f"{v:.1f}" if v is not None else "n/a" for v in (summary.latency_p50_ms, summary.latency_p95_ms))
        print(f"summary: {summary.frames_processed} frames, {summary.fps} fps, latency p50 {p50} ms, p95 {p95} ms, "
              f"{len(pipeline.stats.source_events)} source events, {len(restarts)} server restarts", flush=True)
        ok, line = verdict(samples, warmup_s, args.max_growth, threads_may_vary=args.all_outputs)
        print(line, flush=True)
        if client is not None:
            print(f"live view client: {client.video_bytes / 1e6:.1f} MB of /stream.mp4, {client.polls} status and "
                  f"metrics polls, {client.failures} failed requests" +
                  "".join(f"; {n} x {what}" for what, n in client.errors.most_common()), flush=True)
            evidence_ok, line = evidence_line(out_dir)
            print(line, flush=True)
            ok = ok and evidence_ok
        if args.out_segment is not None:
            print(segments_line(sorted(out_dir.glob("soak_*.mp4")), time.monotonic() - started), flush=True)
        return 0 if ok else 1


def segments_line(files: list[Path], wall_s: float) -> str:
    """How many segment files, their frames, and the video time they hold against the wall time."""
    import av

    frames, video_s = 0, 0.0
    for path in files:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            times = [float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None]
        frames += len(times)
        video_s += max(times) - min(times) if times else 0.0
    return (f"segments: {len(files)} files, {frames} frames, {video_s:.1f} s of video in {wall_s:.1f} s of run "
            f"(the gaps between files, one frame each, and the start-up are not in the files)")


if __name__ == "__main__":
    sys.exit(main())
