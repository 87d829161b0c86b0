"""``stream-guard bench``: scenarios, the baseline, a table and one JSON line."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Iterator, TextIO

import numpy as np

from stream_guard.bench.runner import DEFAULT_SCENARIOS, SCENARIOS, STAGES, Scenario, run_scenario
from stream_guard.errors import ConfigError
from stream_guard.writable import check_writable_file, is_stdout, write_text

REPORT_VERSION = 1


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    """The ``bench`` subcommand's options."""
    p = sub.add_parser("bench", parents=[common], help="measure speed: per-stage times, fps, latency, CPU, memory",
                       description="Runs the real pipeline on generated clips (or --source) and the seed "
                                   "project's ResNeXt-50+LSTM as a cost baseline. The last output line is JSON.")
    p.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), metavar="NAME",
                   help=f"repeatable; one of {', '.join(sorted(SCENARIOS))} (default: {', '.join(DEFAULT_SCENARIOS)})")
    p.add_argument("--source", metavar="S", help="measure this file or stream instead of the generated clips")
    p.add_argument("--seconds", type=float, default=10.0, metavar="N", help="length of each run (default 10)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the JSON report to OUT (-: only the JSON line on "
                   "standard output, the table on stderr)")
    p.add_argument("--model", type=Path, metavar="DIR", help="model folder, or the name of a shipped one such as "
                   "deepfake-ensemble (default: the shipped default model)")
    p.add_argument("--provider", default="auto", metavar="P", help="ONNX Runtime providers (as for watch)")
    p.add_argument("--detect-every", type=int, metavar="N", help="override the detector schedule (0 = auto)")
    p.add_argument("--no-baseline", action="store_true", help="skip the ResNeXt-50+LSTM baseline")
    p.add_argument("--no-encode", action="store_true", help="do not encode the annotated video in any scenario")


def _machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {"cpus": os.cpu_count(), "load_1m": load[0] and round(load[0], 2), "load_5m": load[1] and round(load[1], 2),
            "platform": platform.platform(), "python": platform.python_version(), "processor": platform.machine()}


def _decoded(path: str) -> Iterator[np.ndarray]:
    """Every frame of ``path`` as RGB, looping, for the baseline."""
    import av

    while True:
        with av.open(path) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")


def _custom(source: str) -> Scenario:
    from stream_guard.sources import parse_source

    live = parse_source(source).is_live  # read as a live run reads it, so behind_s says whether it keeps up
    return Scenario("custom", 0, 0, 30, 0, live, not live, f"--source ({'live' if live else 'file'})")


def _print_table(report: dict, out: TextIO) -> None:
    for s in report["scenarios"]:
        lat = s["latency_ms"]
        behind = "" if s["behind_s"] is None else f"{s['behind_s']} s behind the stream at the end, "
        print(f"{s['scenario']}: {s['frames_processed']}/{s['frames_read']} frames, {s['fps']} fps "
              f"({s['realtime_ratio']}x real time), {s['frames_dropped']} dropped, {behind}latency p50 {lat['p50']} ms "
              f"p95 {lat['p95']} ms, min face score rate {s['face_score_hz']['min']} Hz, "
              f"peak RSS {s['peak_rss_mb']} MB", file=out)
        print("  stage ms (mean/p95 when run, per frame): " + ", ".join(
            f"{k} {v['mean']}/{v['p95']}/{v['per_frame']}" for k, v in s["stages_ms"].items()), file=out)
        print(f"  CPU s per thread: {s['cpu_s']}", file=out)
    b = report.get("baseline")
    if b:
        print(f"baseline {b['model']}: {b['fps']} fps ({b['ms_per_frame']} ms/frame); "
              f"stream_guard / baseline: fps {b['speedup']}, CPU per frame {b['cpu_speedup']}", file=out)


def run_bench(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    if not 0 < args.seconds < float("inf"):
        raise ConfigError("--seconds must be positive")
    if args.detect_every is not None and args.detect_every < 0:
        raise ConfigError("--detect-every must be 0 (auto) or more")
    if args.json is not None:
        check_writable_file(args.json, "--json")
    from stream_guard.model.contract import load_model_spec
    from stream_guard.pipeline import model_folder

    model_dir = model_folder(args.model)
    spec = load_model_spec(model_dir)
    scenarios = [_custom(args.source)] if args.source else [SCENARIOS[n] for n in (args.scenario or DEFAULT_SCENARIOS)]
    report: dict = {"bench": REPORT_VERSION, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "machine": _machine(),
        "model": {"name": spec.name, "trained": spec.trained, "folder": str(spec.folder),
                  "input_size": spec.input_size, "sample_hz": spec.sample_hz, "window": spec.window},
        "stages": list(STAGES), "scenarios": [], "baseline": None}
    with tempfile.TemporaryDirectory(prefix="stream_guard_bench_") as tmp:
        work = Path(tmp)
        for scenario in scenarios:
            print(f"running {scenario.name} for {args.seconds:g} s ...", file=sys.stderr, flush=True)
            report["scenarios"].append(run_scenario(
                scenario, args.seconds, work, model_dir, args.provider, args.detect_every, source=args.source,
                encode=False if args.no_encode else None))
        if not args.no_baseline:
            print("running the ResNeXt-50+LSTM baseline ...", file=sys.stderr, flush=True)
            report["baseline"] = _baseline(report["scenarios"], args.seconds)
    to_stdout = is_stdout(args.json)  # `--json -`: the JSON line alone on stdout, the table on stderr
    _print_table(report, sys.stderr if to_stdout else out)
    text = json.dumps(report)
    if args.json is not None and not to_stdout:
        write_text(args.json, json.dumps(report, indent=2) + "\n", "--json")
    print(text, file=out, flush=True)
    return 0


def _baseline(scenarios: list[dict], seconds: float) -> dict:
    from stream_guard.bench.baseline import run_baseline

    source = scenarios[0]["source"]
    result = run_baseline(_decoded(source), max_seconds=min(seconds, 5.0)).to_json()
    result["frames_from"] = scenarios[0]["scenario"]
    result["speedup"] = {s["scenario"]: round(s["fps"] / result["fps"], 1) if result["fps"] else None
                         for s in scenarios}
    result["cpu_speedup"] = {s["scenario"]: round(result["cpu_ms_per_frame"] / s["cpu_ms_per_frame"], 1)
                             for s in scenarios if s.get("cpu_ms_per_frame")}
    return result
