"""Is a refit really better than the release before it? Paired bootstrap of two ``crossval.json``.

    python -m tools.sbi.compare_releases NEW/crossval.json OLD/crossval.json \\
        --manifest ../shared/data/dev/MANIFEST.tsv

Both files hold ``fit_head``'s out-of-fold clip scores (the first fold shuffle). The dev clips
take their labels from the manifest; ``fit_head``'s real videos (``realvid_*``) are reals.
Printed twice, as ``stream-guard compare`` prints it: on the dev clips alone (each family against
its own reals), and with the real videos among the reals (each fake family against all of them,
as the model card's second column). Only clips both files scored count, so both must come from the same
folds (the same ``--folds`` and labelled set) for the difference to be paired fairly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from stream_guard.compare import ScoredFile, compare_scored, print_comparison
from stream_guard.errors import ConfigError
from stream_guard.evaluate import read_manifest
from stream_guard.scoring import LABELS
from tools.sbi.fit_head import REAL_VIDEO_FAMILY


def load_crossval(path: Path, labels: dict[str, int]) -> tuple[str, dict[str, ScoredFile]]:
    """The model's name and version, and its out-of-fold score of every labelled clip and real video."""
    try:
        crossval = json.loads(path.read_text())
        scores = crossval["scores"]
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{path}: not a fit_head crossval.json with out-of-fold scores ({e})") from e
    files = {}
    for name, score in scores.items():
        if name in labels:
            files[name] = ScoredFile(labels[name], float(score))
        elif name.startswith(REAL_VIDEO_FAMILY + "_"):
            files[name] = ScoredFile(LABELS["real"], float(score))
    config = crossval.get("config", {})
    return f"{config.get('name', path.parent.name)} {config.get('version', '')}".strip(), files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("new", type=Path, metavar="NEW/crossval.json")
    parser.add_argument("old", type=Path, metavar="OLD/crossval.json")
    parser.add_argument("--manifest", type=Path, required=True, help="the labelled clips' MANIFEST.tsv")
    args = parser.parse_args(argv)
    try:
        labels = {Path(os.path.relpath(row.path, args.manifest.parent)).as_posix(): LABELS[row.label]
                  for row in read_manifest(args.manifest)}
        name_new, new = load_crossval(args.new, labels)
        name_old, old = load_crossval(args.old, labels)
        dev_only = {n: s for n, s in new.items() if n in labels}, {n: s for n, s in old.items() if n in labels}
        print("== dev clips, each family against its own reals")
        print_comparison({"model_a": name_new, "model_b": name_old, **compare_scored(*dev_only)})
        print("== dev clips and real videos, each family against all reals")
        result = compare_scored(new, old, against_all_reals=True)
        print_comparison({"model_a": name_new, "model_b": name_old, **result})
    except ConfigError as e:
        print(f"compare_releases: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
