"""Each cross-validation fold's model as a model folder, so the live pipeline can score every
labelled clip and real video out of fold (``fit_head --fold-models DIR``).

``DIR/foldK/`` holds the model fitted without fold K: a copy of the release's encoder, a
temporal graph with that fold's frame classifier, and the release's calibration and threshold,
which were fitted on exactly these models' out-of-fold scores. ``DIR/folds.json`` lists each
fold's files: the name ``crossval.json`` gives it, its path relative to the data folder its face
cache was prepared from (``labelled`` for ``--labelled``, ``real`` for ``--real``) and its label.
:mod:`tools.sbi.live_out_of_fold` runs them.
"""
from __future__ import annotations

import json
import shutil
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stream_guard.model.contract import ModelSpec
from tools.sbi.export import export_temporal, session
from tools.sbi.model import TemporalHead

FOLDS_FILE = "folds.json"
LOGIT_TOL = 1e-3  # float32 weights on raw features against the float64 fit's clip logits


@dataclass(frozen=True)
class FoldSource:
    """Where a cross-validated file came from: its path under the ``data`` folder (``labelled``
    or ``real``) and its label."""

    file: str
    data: str
    label: str


def fold_name(k: int) -> str:
    return f"fold{k}"


def write_fold_model(out: Path, release: ModelSpec, k: int, weights: np.ndarray, bias: float) -> ModelSpec:
    """``out/foldK``: ``release`` with fold K's frame classifier in its temporal graph."""
    folder = out / fold_name(k)
    folder.mkdir(parents=True, exist_ok=True)
    encoder, temporal = folder / release.encoder_path.name, folder / release.temporal_path.name
    shutil.copyfile(release.encoder_path, encoder)
    export_temporal(TemporalHead.frame_average(weights, bias), release.window, release.embedding_dim, temporal)
    spec = replace(release, folder=folder.resolve(), encoder_path=encoder.resolve(), temporal_path=temporal.resolve(),
                   name=f"{release.name}-{fold_name(k)}",
                   description=f"Fold {k} of {release.name} {release.version}: its frame classifier fitted without "
                               f"this fold's files, the release's calibration and threshold. For out-of-fold "
                               f"evaluation only. {release.description}")
    spec.save()
    return spec


def clip_logits_through_onnx(spec: ModelSpec, features: np.ndarray, files: np.ndarray) -> dict[str, float]:
    """Each file's mean frame logit from ``spec``'s temporal graph, one frame per window."""
    head = session(spec.temporal_path)
    z = head.run(None, {head.get_inputs()[0].name: features[:, None].astype(np.float32)})[0][:, 0]
    per: dict[str, list[float]] = defaultdict(list)
    for f, v in zip(files, z):
        per[str(f)].append(float(v))
    return {f: float(np.mean(v)) for f, v in per.items()}


def write_folds_file(out: Path, release: ModelSpec, folds: list[set[str]], sources: dict[str, FoldSource],
                     max_logit_diff: float) -> Path:
    """``out/folds.json``: every fold's model folder and files (see the module docstring)."""
    doc = {"release": f"{release.name} {release.version}", "threshold": release.threshold,
           "max_abs_clip_logit_diff": max_logit_diff,
           "folds": [{"model": fold_name(k), "files": [{"name": name, **vars(sources[name])} for name in sorted(test)]}
                     for k, test in enumerate(folds)]}
    path = out / FOLDS_FILE
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
