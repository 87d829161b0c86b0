"""Out-of-fold figures through the live pipeline: each labelled clip and real video scored by
the fold model that never saw it (``fit_head --fold-models DIR``), as ``stream-guard evaluate``
scores a file, alerts included.

    python -m tools.sbi.fit_head ... --fold-models /tmp/folds
    python -m tools.sbi.live_out_of_fold /tmp/folds --labelled-data ../shared/data/dev \\
        --real-data ../shared/data/train_real --crossval models/deepfake/crossval.json --json oof_live.json

``fit_head``'s cross-validated figures come from cached crops (up to 64 evenly spaced frames a
clip); these come from the pipeline a user runs (10 Hz sampling, tracking, smoothing, the alert
rule), so they say what a person watching would have seen: the file AUCs, and the alerts raised
(pooled, per family, and per source of real videos, whose families are ``realvid_<source>``).
With ``--crossval`` (the release's ``crossval.json``) it also says how closely the pipeline's
file scores follow the cached out-of-fold ones.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from stream_guard.config import ModelOptions, OutputOptions, RunConfig, SourceOptions
from stream_guard.errors import ConfigError, StreamGuardError
from stream_guard.evaluate import (ManifestRow, ScoredFiles, build_report, live_alert_text, print_table,
                                   score_files, write_json)
from stream_guard.outputs.alerts import AlertOptions
from stream_guard.scoring import family_of
from tools.sbi.fit_head import REAL_VIDEO_FAMILY
from tools.sbi.fold_models import FOLDS_FILE


def fold_rows(fold: dict, roots: dict[str, Path | None]) -> tuple[list[ManifestRow], dict[str, str], int]:
    """A fold's files as manifest rows (real videos in family ``realvid_<source>``), the
    ``crossval.json`` name of each path, and how many had no data folder given."""
    rows, names, skipped = [], {}, 0
    for entry in fold["files"]:
        root = roots.get(entry["data"])
        if root is None:
            skipped += 1
            continue
        path = root / entry["file"]
        family = family_of(Path(entry["file"]).name)
        rows.append(ManifestRow(path, entry["label"],
                                f"{REAL_VIDEO_FAMILY}_{family}" if entry["data"] == "real" else family))
        names[str(path)] = entry["name"]
    return rows, names, skipped


def agreement(files: list[dict], names: dict[str, str], crossval: dict[str, float]) -> dict:
    """How closely the pipeline's file scores follow ``crossval.json``'s cached out-of-fold ones."""
    pairs = np.array([(crossval[names[f["file"]]], f["score"]) for f in files if names[f["file"]] in crossval])
    if len(pairs) < 2:
        return {"files": int(len(pairs)), "correlation": None, "mean_abs_difference": None}
    return {"files": int(len(pairs)), "correlation": round(float(np.corrcoef(pairs.T)[0, 1]), 4),
            "mean_abs_difference": round(float(np.abs(pairs[:, 0] - pairs[:, 1]).mean()), 4)}


def is_real_video(entry: dict) -> bool:
    return entry["family"].startswith(REAL_VIDEO_FAMILY + "_")


def print_families_live(report: dict, prefix: str = "") -> None:
    """The alerts of each family (named ``prefix...``), a line each."""
    for name, fam in report["families"].items():
        if name.startswith(prefix) and (fam["live_alerts"]["fake_files"] or fam["live_alerts"]["real_files"]):
            print(f"  {name}: {live_alert_text(fam['live_alerts'])}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.sbi.live_out_of_fold", description=__doc__.split("\n\n")[0])
    ap.add_argument("folds", type=Path, help="fit_head --fold-models DIR")
    ap.add_argument("--labelled-data", type=Path, required=True,
                    help="the data folder --labelled's face cache was prepared from (its MANIFEST.tsv's folder)")
    ap.add_argument("--real-data", type=Path, help="the data folder of --real (its real videos are scored too)")
    ap.add_argument("--crossval", type=Path, help="the release's crossval.json, to compare file scores with")
    ap.add_argument("--json", type=Path, help="write the reports here")
    rule = AlertOptions()
    ap.add_argument("--alert-raise", type=int, default=rule.raise_windows, metavar="N",
                    help=f"raise an alert after N consecutive fake windows (default {rule.raise_windows})")
    ap.add_argument("--alert-clear", type=int, default=rule.clear_windows, metavar="N",
                    help=f"clear it after N consecutive real windows (default {rule.clear_windows})")
    ap.add_argument("--max-frames", type=int, help="frames per file (quick checks)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    args = ap.parse_args(argv)
    try:
        doc = json.loads((args.folds / FOLDS_FILE).read_text())
        crossval = json.loads(args.crossval.read_text())["scores"] if args.crossval else {}
        alerts = AlertOptions(raise_windows=args.alert_raise, clear_windows=args.alert_clear)
    except (OSError, ValueError, KeyError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for root in (args.labelled_data, args.real_data):
        if root is not None and not root.is_dir():
            print(f"error: no such data folder: {root}", file=sys.stderr)
            return 2
    roots = {"labelled": args.labelled_data, "real": args.real_data}
    scored, names, skipped = ScoredFiles(), {}, 0
    for k, fold in enumerate(doc["folds"]):
        rows, fold_names, fold_skipped = fold_rows(fold, roots)
        names |= fold_names
        skipped += fold_skipped
        config = RunConfig(source=SourceOptions("-"), outputs=OutputOptions(alerts=alerts),
                           model=ModelOptions(model_dir=args.folds / fold["model"], intra_op_threads=args.threads))

        def progress(i: int, n: int, name: str, k: int = k) -> None:
            print(f"[fold {k}: {i + 1}/{n}] {name}", file=sys.stderr, flush=True)

        try:
            scored.extend(score_files(rows, config, progress, args.max_frames))
        except (StreamGuardError, ConfigError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if scored.provenance is not None:  # the fold models stand for the release
        scored.provenance = dataclasses.replace(scored.provenance, model=f"{doc['release']}, fold models")
    labelled = scored.only(lambda f: not is_real_video(f))
    source = f"{args.folds} (out of fold, release {doc['release']})"
    reports = {"labelled": build_report(labelled, alerts, source, labelled.count)}
    print(f"labelled clips, each scored by the fold model that never saw it ({doc['release']}):")
    print_table(reports["labelled"])
    print_families_live(reports["labelled"])
    if args.real_data is not None:
        reports["with_real_videos"] = build_report(scored, alerts, source, scored.count)
        print("\nwith the real videos among the reals:")
        print_table(reports["with_real_videos"])
        print_families_live(reports["with_real_videos"], REAL_VIDEO_FAMILY + "_")
    if skipped:
        print(f"{skipped} real video(s) not scored: no --real-data given")
    if crossval:
        reports["crossval_agreement"] = agreement(scored.files, names, crossval)
        a = reports["crossval_agreement"]
        print(f"against {args.crossval}'s cached out-of-fold scores ({a['files']} files): correlation "
              f"{a['correlation']}, mean absolute difference {a['mean_abs_difference']}")
    if args.json is not None:
        write_json(reports, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
