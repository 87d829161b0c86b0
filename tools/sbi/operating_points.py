"""Name a release's operating points in its ``model.json`` from its out-of-fold clip scores.

    python -m tools.sbi.operating_points models/deepfake --manifest ../shared/data/dev/MANIFEST.tsv

``fit_head`` does this itself for every refit; this command does it for a release already
shipped, from its ``crossval.json`` (the first fold shuffle's out-of-fold scores of the labelled
clips, labelled by the manifest, and of ``fit_head``'s real videos, all real). Each point is the
lowest threshold at which at most its share of all those reals scores at or above it
(``quiet``: 10 %, ``sensitive``: 30 %), with the shares of reals and fakes it flags; ``default``
records the same shares at the model's own threshold. ``stream-guard --threshold NAME`` then
picks one (``ModelSpec.threshold_for``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from stream_guard.errors import StreamGuardError
from stream_guard.evaluate import read_manifest
from stream_guard.model.contract import load_model_spec
from stream_guard.scoring import LABELS
from tools.sbi.compare_releases import load_crossval
from tools.sbi.metrics import measure_points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, metavar="MODEL_DIR", help="a release folder with crossval.json")
    parser.add_argument("--manifest", type=Path, required=True, help="the labelled clips' MANIFEST.tsv")
    args = parser.parse_args(argv)
    try:
        spec = load_model_spec(args.model)
        labels = {Path(os.path.relpath(row.path, args.manifest.parent)).as_posix(): LABELS[row.label]
                  for row in read_manifest(args.manifest)}
        scored = load_crossval(args.model / "crossval.json", labels).scores
    except StreamGuardError as e:
        print(f"operating_points: error: {e}", file=sys.stderr)
        return 2
    files = sorted(scored)
    points = measure_points([scored[f].label for f in files], [scored[f].score for f in files], spec.threshold)
    if not points:
        print("operating_points: error: crossval.json needs out-of-fold scores of both reals and fakes",
              file=sys.stderr)
        return 2
    dataclasses.replace(spec, operating_points=points).save()
    for point in points:
        print(point.describe())
    print(f"-> {args.model / 'model.json'} ({len(files)} clips out of fold)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
