"""The ``stream-guard scan`` command: options -> files -> analyses -> lines or a report -> exit code."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from stream_guard.config import ModelOptions, RunConfig, SourceOptions, analysis_options
from stream_guard.errors import ConfigError, SourceError
from stream_guard.faces.detector import detector_options
from stream_guard.file_analysis import Scanned, scanned_name
from stream_guard.outputs.progress import FrameProgress
from stream_guard.pipeline import build_explainer, load_model
from stream_guard.model.provenance import Provenance
from stream_guard.scan.collect import collect_files
from stream_guard.scan.json_lines import ScanLines
from stream_guard.scan.report import write_report
from stream_guard.model.occlusion import Explaining
from stream_guard.scan.runner import FileOutcome, ScanResult, scan_files
from stream_guard.writable import check_outputs_spare_the_source, check_writable_folder, is_stdout

EXIT_INTERRUPTED = 130


class _OncePerRun(logging.Filter):
    """Drop the pipeline's per-file UNTRAINED warning (the scan says it once, at the end)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "UNTRAINED" not in str(record.msg)


def scan_config(args: argparse.Namespace) -> RunConfig:
    """The run configuration shared by every file of the scan."""
    return RunConfig(source=SourceOptions(spec="demo", **({"max_megapixels": args.max_megapixels}
                                                          if getattr(args, "max_megapixels", None) else {})),
                     model=ModelOptions(model_dir=args.model, provider=args.provider, threshold=args.threshold),
                     detector=detector_options(args.detector, args.detect_tiles),
                     analysis=analysis_options(min_face_px=args.min_face_px))


def outcome_line(outcome: FileOutcome) -> str:
    """``fake     0.734  path  (2 faces)``: one line per file."""
    score = "  -  " if outcome.score is None else f"{outcome.score:.3f}"
    if outcome.error:
        detail = outcome.error
    else:
        faces = sum(1 for t in outcome.analysis.tracks if t.scores) if outcome.analysis else 0
        detail = f"{faces} face{'s' if faces != 1 else ''}"
    return f"{outcome.verdict:<8} {score}  {scanned_name(outcome.path)}  ({detail})"


def summary_line(result: ScanResult) -> str:
    counts = ", ".join(f"{result.count(v)} {v}" for v in ("fake", "real", "no-face", "error"))
    stopped = " (interrupted)" if result.interrupted else ""
    return (f"{len(result.outcomes)} files in {result.elapsed_s:.1f} s{stopped}: {counts}; "
            f"model {result.provenance.model}, threshold {result.provenance.threshold_text}")


def unread_line(result: ScanResult) -> str:
    """The error line of a scan that found no fake but could not read every file."""
    unread = result.unread
    names = ", ".join(scanned_name(o.path) for o in unread[:3])
    names += f" and {len(unread) - 3} more" if len(unread) > 3 else ""
    return (f"stream-guard: error: no fake found, but {len(unread)} of {len(result.outcomes)} file(s) could not "
            f"be read, so they were not checked: {names}")


def run_scan(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the command; return its exit code (0 no fake found in files all read, 10 a fake found, 3 no fake
    found but a file could not be read, 130 interrupted)."""
    explain = args.explain
    if explain and args.report is None:
        raise ConfigError("--explain needs --report DIR: its occlusion maps are pictures in the report")
    if is_stdout(args.report):
        raise ConfigError("--report takes a folder (report.json, report.html and their pictures): for the results "
                          "on standard output, use --jsonl -")
    jsonl = getattr(args, "jsonl", None)
    if is_stdout(jsonl):
        out = err  # standard output carries the JSON lines alone
    config = scan_config(args)
    spec = load_model(config)  # a bad --model fails here, once, before any file
    explaining = Explaining(build_explainer(config, spec), every_face=explain == "all") if explain else None
    files = collect_files(args.paths, [Path(args.report)] if args.report is not None else [])  # not its own pictures
    if args.report is not None:
        check_writable_folder(args.report, "--report")
    stop = threading.Event()
    lines: ScanLines | None = None
    if jsonl is not None:
        for path in files if not is_stdout(jsonl) else ():
            if isinstance(path, Path):
                check_outputs_spare_the_source(path, [(Path(jsonl), "--jsonl")],
                                               "one of the files scanned: writing it would destroy it")
        lines = ScanLines(jsonl, files, on_reader_gone=stop.set)
        lines.start(Provenance.of(spec, config.model.threshold))

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        raise KeyboardInterrupt  # ends the current file's pipeline; the scan stops before the next

    in_main = threading.current_thread() is threading.main_thread()  # signals can only be set there
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    quiet = _OncePerRun()
    pipeline_log = logging.getLogger("stream_guard.pipeline")
    pipeline_log.addFilter(quiet)
    try:
        with tqdm(total=len(files), desc="scan", unit="file", file=err, dynamic_ncols=True) as bar, \
                logging_redirect_tqdm():
            def on_file(outcome: FileOutcome) -> None:
                bar.update(1)
                if lines is not None:
                    lines.file(outcome)
                if args.report is None:
                    tqdm.write(outcome_line(outcome), file=out)

            def file_sinks(path: Scanned) -> list[FrameProgress]:
                return [FrameProgress(scanned_name(path), err, args.max_frames, position=1)] if err.isatty() else []

            result = scan_files(files, config, spec, on_file=on_file, should_stop=stop.is_set,
                                max_frames=args.max_frames, explaining=explaining, file_sinks=file_sinks)
        # the plots of a large scan take a while: a Ctrl-C then lost every file's result
        asked = threading.Event()

        def while_writing(signum: int, frame: object) -> None:
            if asked.is_set():
                raise KeyboardInterrupt
            asked.set()
            print("stream-guard: writing out the results of the files analysed first; interrupt again to stop "
                  "without them", file=err, flush=True)

        for s in previous:
            signal.signal(s, while_writing)
        if lines is not None:
            lines.summary(result)
        if args.report is not None:
            html_path = write_report(result, args.report)
            print(f"report: {html_path} (and {Path(args.report) / 'report.json'})", file=out)
    finally:
        pipeline_log.removeFilter(quiet)
        for s, h in previous.items():
            signal.signal(s, h)
    print(summary_line(result), file=out)
    if not result.provenance.model_trained:
        print(f"note: model '{result.provenance.model}' is UNTRAINED: scores are meaningless", file=err)
    if lines is not None:
        lines.close()  # a line the disk refused fails the scan, after its results are out
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.exit_code == SourceError.exit_code:
        print(unread_line(result), file=err)
    return result.exit_code
