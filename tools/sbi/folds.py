"""Identity-grouped folds over labelled clips, so no person is on both sides of a split.

The data README allows training on the labelled dev fakes only if every reported number
comes from clips whose identity the model never saw. Grouping rule, by file name:

* ``dfl_<Name>_<n>_{L,R,full}``: the name between ``dfl_`` and the clip number (the
  original ``_L`` half and the swapped ``_R`` half of one demo share a group);
* a family with both labels otherwise (``dfdc``, ``roop``, ``meso``): the whole family is
  one group, because its real and fake files may show the same people (roop's output is
  its target with a new face) and the names do not say who is who;
* a family with fakes only: the file stem up to ``__`` (SadTalker's ``art_0__japanese``
  and ``art_0__japanese_es1`` animate the same portrait).
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from stream_guard.scoring import family_of


def identity_groups(files: list[str], labels: list[str]) -> list[str]:
    """One group name per file (see the module docstring for the rule)."""
    fam_labels: dict[str, set[str]] = defaultdict(set)
    for f, lab in zip(files, labels):
        fam_labels[family_of(f)].add(lab)
    groups = []
    for f in files:
        fam, stem = family_of(f), Path(f).stem
        if fam == "dfl":
            groups.append("dfl_" + re.sub(r"_\d+_(L|R|full)$", "", stem[len("dfl_"):]))
        elif len(fam_labels[fam]) == 2:
            groups.append(fam)
        else:
            groups.append(stem.split("__")[0])
    return groups


def grouped_folds(files: list[str], labels: list[str], k: int, seed: int = 0) -> list[set[str]]:
    """``k`` disjoint sets of test files covering all files; groups never straddle two sets.

    Groups are dealt largest first to the fold with the fewest files so far (ties broken by
    a seeded shuffle), which keeps folds near equal in size.
    """
    by_group: dict[str, list[str]] = defaultdict(list)
    for f, g in zip(files, identity_groups(files, labels)):
        by_group[g].append(f)
    if k < 2 or k > len(by_group):
        raise ValueError(f"need 2 <= k <= {len(by_group)} groups, got k={k}")
    rng = np.random.default_rng(seed)
    names = list(by_group)
    rng.shuffle(names)
    names.sort(key=lambda g: -len(by_group[g]))
    folds: list[set[str]] = [set() for _ in range(k)]
    for g in names:
        min(folds, key=len).update(by_group[g])
    return folds
