"""``stream-guard compare``: is one model really better than another on the same labelled clips?

Both inputs are ``stream-guard evaluate --json`` reports of the same manifest (one per
model). Files are matched by their path relative to the manifest's folder, so the two runs
may start from different working folders. For the pooled files and each family with both
labels it gives both AUCs, their difference and its paired bootstrap interval
(:func:`stream_guard.scoring.paired_auc_difference`): on a few dozen clips two models' AUCs
can differ by 0.05 by chance, and the interval says whether this difference is more than that.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from stream_guard.errors import ConfigError
from stream_guard.scoring import AUC_INTERVAL_LEVEL, LABELS, family_of, paired_auc_difference


@dataclass(frozen=True)
class ScoredFile:
    label: int
    score: float


def _keys(file: str, root: str) -> tuple[str, ...]:
    """The names a report's file may be matched by: its path relative to the manifest's folder (both are as
    evaluate saw them: relative ones from the same working folder), and an absolute path as it is (a row
    that gave one; the same wherever evaluate ran). A URL as it is."""
    if "://" in file:
        return (file,)
    relative = Path(os.path.relpath(file, root)).as_posix()
    return (relative, file) if os.path.isabs(file) else (relative,)


def load_scored_files(path: str | Path) -> tuple[str, dict[tuple[str, ...], ScoredFile]]:
    """The model name and every scored file of an ``evaluate --json`` report, keyed by :func:`_keys`.
    Raises ConfigError naming the problem."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"report not found: {path}") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"report {path}: cannot read it as JSON ({e})") from e
    if not isinstance(report, dict) or not isinstance(report.get("files"), list) \
            or not isinstance(report.get("manifest"), str):
        raise ConfigError(f"report {path}: not a 'stream-guard evaluate --json' report (no 'files' and 'manifest')")
    root = os.path.dirname(report["manifest"])
    files = {}
    for entry in report["files"]:
        try:
            files[_keys(entry["file"], root)] = ScoredFile(LABELS[entry["label"]], float(entry["score"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"report {path}: malformed file entry {entry!r}") from e
    return str(report.get("model", path.stem)), files


def _paired(a: dict[tuple[str, ...], ScoredFile], b: dict[tuple[str, ...], ScoredFile]
            ) -> tuple[dict[str, ScoredFile], dict[str, ScoredFile]]:
    """Both reports' files by one name each: a file of B that shares any of its names with a file of A takes
    A's first name (a manifest of absolute paths and relative ones, evaluated from two working folders, pairs
    the former by path and the latter by their place beside the manifest)."""
    by_name = {name: keys for keys in a for name in keys}
    named_b: dict[str, ScoredFile] = {}
    for keys, scored in b.items():
        match = next((by_name[name] for name in keys if name in by_name), None)
        named_b[match[0] if match is not None else keys[0]] = scored
    return {keys[0]: scored for keys, scored in a.items()}, named_b


def compare_scored(a: dict[str, ScoredFile], b: dict[str, ScoredFile], against_all_reals: bool = False) -> dict:
    """Pooled and per-family :func:`paired_auc_difference` of A over B on the files both scored
    (families: the file name up to its first ``_``; those with one label only are listed
    with ``None``). With ``against_all_reals``, each family's fakes are ranked against every
    real file instead of the family's own reals, and families of reals only are left out.
    Raises ConfigError when a file's label differs between the two."""
    common = sorted(set(a) & set(b))
    for name in common:
        if a[name].label != b[name].label:
            raise ConfigError(f"{name} is labelled differently in the two reports")
    if not common:
        raise ConfigError("the two reports share no scored file: were they made from the same manifest?")

    def difference(names: list[str]) -> dict | None:
        return paired_auc_difference([a[n].label for n in names], [a[n].score for n in names],
                                     [b[n].score for n in names])

    def in_family(name: str, fam: str) -> bool:
        return family_of(name) == fam or (against_all_reals and a[name].label == LABELS["real"])

    families = sorted({family_of(n) for n in common if not against_all_reals or a[n].label == LABELS["fake"]})
    return {
        "pooled": difference(common),
        "families": {fam: difference([n for n in common if in_family(n, fam)]) for fam in families},
        "n_common": len(common),
        "only_in_a": sorted(set(a) - set(b)),
        "only_in_b": sorted(set(b) - set(a)),
        "level": AUC_INTERVAL_LEVEL,
    }


def compare_reports(path_a: str | Path, path_b: str | Path) -> dict:
    """:func:`compare_scored` of two ``evaluate --json`` reports, with their model names."""
    model_a, a = load_scored_files(path_a)
    model_b, b = load_scored_files(path_b)
    return {"model_a": model_a, "model_b": model_b, **compare_scored(*_paired(a, b))}


def _verdict(d: dict) -> str:
    low, high = d["difference_ci"]
    if low > 0:
        return "A better"
    if high < 0:
        return "B better"
    return "no clear difference"


def print_comparison(result: dict, out: TextIO | None = None) -> None:
    """One line per family and pooled: both AUCs, A minus B and its interval, a verdict."""
    out = out or sys.stdout  # looked up at call time, so redirected output is followed
    level = f"{result['level']:.0%}"
    print(f"A = {result['model_a']}, B = {result['model_b']}; {result['n_common']} files scored by both", file=out)
    print(f"{'family':<16} {'real':>5} {'fake':>5} {'AUC A':>6} {'AUC B':>6} {'A - B':>7} {level + ' interval':>17}  "
          f"verdict", file=out)
    pooled = [("POOLED", result["pooled"])] if result["pooled"] is not None or not result["families"] else []
    for name, d in [*result["families"].items(), *pooled]:
        if d is None:
            print(f"{name:<16} {'one label only: no AUC':>43}", file=out)
            continue
        low, high = d["difference_ci"]
        print(f"{name:<16} {d['n_real']:>5} {d['n_fake']:>5} {d['auc_a']:>6.3f} {d['auc_b']:>6.3f} "
              f"{d['difference']:>+7.3f} {f'{low:+.3f} to {high:+.3f}':>17}  {_verdict(d)}", file=out)
    for side, key in (("A", "only_in_a"), ("B", "only_in_b")):
        if result[key]:
            print(f"{len(result[key])} file(s) scored only in {side}, left out: {', '.join(result[key][:5])}"
                  + (" ..." if len(result[key]) > 5 else ""), file=out)
