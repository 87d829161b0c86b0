"""Is a refit really better than the release before it? Paired bootstrap of two ``crossval.json``.

    python -m tools.sbi.compare_releases NEW/crossval.json OLD/crossval.json \\
        --manifest ../shared/data/dev/MANIFEST.tsv

Both files hold ``fit_head``'s out-of-fold clip scores (the first fold shuffle). The dev clips
take their labels from the manifest; ``fit_head``'s real videos (``realvid_*``) are reals.
Printed as ``stream-guard compare`` prints it: on the dev clips alone (each family against its
own reals), with the real videos among the reals (each fake family against all of them, as the
model card's second column), and, where both files hold them, the leave-family-out scores. Only clips both files scored count, so both must come from the same
folds (the same ``--folds`` and labelled set) for the difference to be paired fairly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from stream_guard.compare import ScoredFile, compare_scored, print_comparison
from stream_guard.errors import ConfigError
from stream_guard.evaluate import read_manifest
from stream_guard.scoring import LABELS
from tools.sbi.fit_head import REAL_VIDEO_FAMILY


@dataclass(frozen=True)
class CrossVal:
    name: str
    scores: dict[str, ScoredFile]
    without_family: dict[str, dict[str, ScoredFile]]  # family -> scores of models fitted without it


def _scored(scores: dict[str, float], labels: dict[str, int]) -> dict[str, ScoredFile]:
    """Labelled clips by the manifest, fit_head's real videos as reals; anything else is dropped."""
    files = {}
    for name, score in scores.items():
        if name in labels:
            files[name] = ScoredFile(labels[name], float(score))
        elif name.startswith(REAL_VIDEO_FAMILY + "_"):
            files[name] = ScoredFile(LABELS["real"], float(score))
    return files


def load_crossval(path: Path, labels: dict[str, int]) -> CrossVal:
    """The model's name and version, its out-of-fold score of every labelled clip and real video,
    and its leave-family-out scores where ``fit_head --leave-family-out`` stored them."""
    try:
        crossval = json.loads(path.read_text())
        scores = crossval["scores"]
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{path}: not a fit_head crossval.json with out-of-fold scores ({e})") from e
    config = crossval.get("config", {})
    return CrossVal(f"{config.get('name', path.parent.name)} {config.get('version', '')}".strip(),
                    _scored(scores, labels),
                    {fam: _scored(s, labels) for fam, s in crossval.get("leave_family_out_scores", {}).items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("new", type=Path, metavar="NEW/crossval.json")
    parser.add_argument("old", type=Path, metavar="OLD/crossval.json")
    parser.add_argument("--manifest", type=Path, required=True, help="the labelled clips' MANIFEST.tsv")
    args = parser.parse_args(argv)
    try:
        labels = {Path(os.path.relpath(row.path, args.manifest.parent)).as_posix(): LABELS[row.label]
                  for row in read_manifest(args.manifest)}
        new, old = load_crossval(args.new, labels), load_crossval(args.old, labels)
        names = {"model_a": new.name, "model_b": old.name}
        dev_only = [{n: s for n, s in cv.scores.items() if n in labels} for cv in (new, old)]
        print("== dev clips, each family against its own reals")
        print_comparison({**names, **compare_scored(*dev_only)})
        print("== dev clips and real videos, each family against all reals")
        print_comparison({**names, **compare_scored(new.scores, old.scores, against_all_reals=True)})
        families = sorted(new.without_family.keys() & old.without_family.keys())
        if families:
            print("== leave-family-out: each family's fakes against all reals, scored by models fitted without it")
            results = {fam: compare_scored(new.without_family[fam], old.without_family[fam], against_all_reals=True)
                       for fam in families}
            print_comparison({**names, **results[families[0]], "pooled": None,  # one AUC per family, no pool
                              "families": {f: r["families"][f] for f, r in results.items()},
                              "n_common": max(r["n_common"] for r in results.values())})
        else:
            print("(leave-family-out: not in both files; fit_head --leave-family-out stores its scores in refits "
                  "made since 2026-12-04, so refit the older recipe to compare)")
    except ConfigError as e:
        print(f"compare_releases: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
