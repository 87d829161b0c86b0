"""Fit the frame classifier on frozen region statistics, with identity-grouped cross-validation.

    python -m tools.sbi.fit_head --labelled /work/cache/faces/dev \\
        --real /work/cache/faces/train_real --out models/deepfake --folds 5

The encoder is :class:`tools.sbi.model.RegionStatsEncoder` (frozen ImageNet
EfficientNet-Lite0, inner-face vs surround statistics). A logistic regression on its
output is fitted to

* every frame of the labelled clips (``--labelled``, a face cache such as dev), each clip
  weighted equally, and
* real faces of ``--real`` with their self-blended pseudo-fakes (``--sbi-weight`` of the
  labelled clips' total weight), which keep the blending-boundary cue in the model;
  ``--sbi-small-face-draws`` adds pairs that are all shrunk to the small, re-encoded faces of
  live-swap demos (the blend seam as it looks at 60-105 px after H.264); ``--swap-draws`` and
  ``--swap-small-face-draws`` add face-swap pseudo-fakes, another person's face blended in
  (:mod:`tools.sbi.swap_blend`); ``--sbi-tight-face-draws`` and ``--swap-tight-face-draws`` add
  pairs cut down to 1-1.35 times the face box, as face-crop datasets keep faces (the seam's
  surroundings gone, the edge repeated beyond); ``--rerender-draws`` and ``--rerender-small-face-draws`` add the
  face re-rendered as a talking-head generator would (:mod:`tools.sbi.rerender_blend`);
  ``--learned-swaps GENERATOR`` with ``--learned-swap-draws`` / ``--learned-swap-small-face-draws``
  adds faces redrawn as another person by a trained swap generator (:mod:`tools.swapgen`), and
* optionally, the real *videos* of ``--real`` as real clips of their own family, ``realvid``
  (``--real-video-weight`` each, relative to one labelled clip; the default 0 only scores them).

``--features`` appends other summaries of the same maps to the 415 statistics (see
:class:`tools.sbi.model.RegionStatsEncoder`); none has beaten the statistics alone so far.
``--views colour,greystd`` also summarises a grey, contrast-standardised copy of every crop
through a second pass of the frozen blocks (:class:`tools.sbi.model.GreyStandardise`); each
view's features are encoded and cached on their own, then put side by side.

``--landmark-regions`` adds a third block of columns: contrasts of face regions that follow the
468 face-mesh landmarks in the colour view's maps (:mod:`tools.sbi.landmark_regions`); the exported
encoder then takes the region masks beside the crop, and ``model.json`` lists them, so the
pipeline runs the face mesh for it.

``--family-balance P`` reweights the labelled clips so that each family's fakes, and each
family's reals, weigh in proportion to their clip count to the power P (1: every clip the
same, as before; 0: every family the same), keeping the total: the DeepFaceLive clips,
two thirds of dev, then dominate less what the classifier learns.

The labelled dev reals are nearly all halves of DeepFaceLive demos (small, heavily
re-encoded faces), so figures on them alone hide how often ordinary talking-head videos
are flagged (often: see models/MODEL_CARD.md). The real videos therefore also join
every evaluation: they are dealt into the folds like labelled clips (grouped by source),
scored out of fold, and counted among the reals of the ``with_real_videos`` and
leave-family-out figures; while a fold is tested, the self-blended pairs made from its
real videos are left out of training too. Calibration and threshold still come from the
labelled clips, unless ``--real-video-fpr`` also bounds how many real videos the threshold flags.

Cross-validation: folds grouped by identity (:mod:`tools.sbi.folds`); a clip's score is
the mean frame logit, as the pipeline's temporal head computes it over a window. The
out-of-fold scores give the reported AUCs, the Platt calibration and the threshold
(``--target-fpr`` of out-of-fold labelled reals above it, at least 0.5; ``--real-video-fpr`` raises it
until at most that share of the out-of-fold real videos is above it too). With
``--leave-family-out`` each family is also scored by models that never saw it.
The final classifier is fitted on everything and exported in the model contract; the
recurrent head's correction is zero, so a window's logit is the mean of its frames'.
With ``--fold-models DIR`` each fold's classifier is exported too, as a model folder with the
release's calibration and threshold (:mod:`tools.sbi.fold_models`), so
:mod:`tools.sbi.live_out_of_fold` can run every clip through the pipeline out of fold.

With ``--e2e weights.pt --e2e-oof oof.json`` (from :mod:`tools.sbi.finetune_cv` on the
same folds), the exported model also carries that fine-tuned CNN: every out-of-fold score,
the calibration and the threshold come from the standardised mix of the two parts
(:mod:`tools.sbi.ensemble`), and ``crossval.json`` keeps each part's own report. The
leave-family-out figures are then of the region part alone, unless every fake family has a
``--e2e-lofo FAMILY[,FAMILY...]=oof.json`` (``finetune_cv --exclude-family`` runs on the same
folds): each family is then scored by the mix of both parts trained without it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from stream_guard.faces.crop import crop_face, crop_matrix, transform_points
from stream_guard.model.contract import REGION_NAMES, ModelSpec
from stream_guard.scoring import AUC_INTERVAL_RESAMPLES, family_of, metrics, metrics_by_family
from stream_guard.synth.self_blend import blend_frame, sample_clip_blend
from tools.sbi.data import (Clip, SampleOptions, load_cache, sample_learned_swap_pair_with_landmarks,
                            sample_pair_with_landmarks, sample_rerender_pair_with_landmarks,
                            sample_swap_pair_with_landmarks, source_key, synthetic_clips)
from tools.sbi.swap_blend import ShapeIndex
from tools.sbi.ensemble import ScoreMix, ensemble, load_oof
from tools.sbi.export import (FP16_LOGIT_TOL, export_graphs, onnx_frame_logits, parity, parity_exit_code,
                              store_weights_fp16)
from tools.sbi.fold_models import LOGIT_TOL as FOLD_LOGIT_TOL
from tools.sbi.fold_models import FoldSource, clip_logits_through_onnx, write_fold_model, write_folds_file
from tools.sbi.folds import grouped_folds, identity_groups
from tools.sbi.landmark_regions import LandmarkContrastGraph, crop_regions
from tools.sbi.metrics import calibrate, measure_points
from tools.sbi.model import (ALL_REGION_GROUPS, ALL_REGION_VIEWS, MEAN, REGION_GROUPS, REGION_TAPS, REGION_VIEWS, STD,
                             Encoder, RegionStatsEncoder, TemporalHead)
from tools.sbi.onnx_features import OnnxFeaturiser
from tools.sbi.train import to_tensor
from tools.swapgen.model import FaceSwapper


@dataclass
class FeatureSet:
    """Frame features with the file each frame came from (SBI frames: the real file they were made from)."""

    x: np.ndarray
    files: np.ndarray
    labels: np.ndarray  # 1 = fake


def concat(sets: list[FeatureSet]) -> FeatureSet:
    """One feature set holding the rows of ``sets`` in order."""
    return FeatureSet(*(np.concatenate([getattr(fs, k) for fs in sets]) for k in ("x", "files", "labels")))


def side_by_side(sets: list[FeatureSet]) -> FeatureSet:
    """The columns of ``sets`` (the same frames, in the same order) put side by side."""
    first = sets[0]
    for fs in sets[1:]:
        if not (np.array_equal(fs.files, first.files) and np.array_equal(fs.labels, first.labels)):
            raise ValueError("feature sets of different frames cannot be put side by side")
    return FeatureSet(np.concatenate([fs.x for fs in sets], 1), first.files, first.labels)


# A view's features of crops ``uint8 [N, S, S, 3]`` with their landmarks (crop pixels): ``[N, D]``.
Featuriser = Callable[[np.ndarray, list[np.ndarray]], np.ndarray]
# Featurisers by view name: each set of crops is made once and run through every view.
Featurisers = dict[str, Featuriser]


def labelled_features(featurisers: Featurisers, clips: list[Clip], size: int, margin: float,
                      max_frames: int) -> dict[str, FeatureSet]:
    """Every frame (up to ``max_frames`` per clip, evenly spaced), cropped as the pipeline crops."""
    xs: dict[str, list[np.ndarray]] = {view: [] for view in featurisers}
    files, labels = [], []
    for clip in clips:
        idx = np.unique(np.linspace(0, len(clip) - 1, min(len(clip), max_frames)).astype(int))
        crops = np.stack([crop_face(clip.frames[i], clip.boxes[i], size, margin) for i in idx])
        marks = [transform_points(clip.landmarks[i], crop_matrix(clip.boxes[i], size, margin)) for i in idx]
        for view, featurise in featurisers.items():
            xs[view].append(featurise(crops, marks))
        files += [clip.file] * len(idx)
        labels += [int(clip.label == "fake")] * len(idx)
    return {view: FeatureSet(np.concatenate(x), np.array(files), np.array(labels)) for view, x in xs.items()}


def sbi_features(featurisers: Featurisers, clips: list[Clip], size: int, margin: float, draws: int,
                 seed: int, framing: str = "full", kind: str = "self",
                 swapper: FaceSwapper | None = None) -> dict[str, FeatureSet]:
    """``draws`` passes over the real clips, 4 frames each: augmented reals and their pseudo-fakes
    (``framing``: ``small`` shrinks every pair and H.264-re-encodes it, see
    :func:`tools.sbi.augment.small_face_aug`, ``tight`` cuts it down to the face, see
    :func:`tools.sbi.augment.tight_face_aug`;
    ``kind``: ``self`` blends the face's own altered copy, ``swap`` another person's face,
    :mod:`tools.sbi.swap_blend`, ``rerender`` the face redrawn as a talking-head generator would,
    :mod:`tools.sbi.rerender_blend`, ``learned`` the face redrawn as another identity by ``swapper``,
    :mod:`tools.swapgen`).
    ``files`` names each pair's source: :func:`real_video_key` for videos, the file for photos."""
    rng = np.random.default_rng(seed)
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}")
    opts = SampleOptions(size=size, margin=margin, small_faces=framing == "small", tight_faces=framing == "tight")
    index = ShapeIndex(clips, source_key) if kind == "swap" else None
    if kind == "learned" and swapper is None:
        raise ValueError("learned swaps need a trained generator (--learned-swaps)")
    reals, fakes, marks, sources = [], [], [], []
    for _ in range(draws):
        for clip in clips:
            r, f, lms = (sample_swap_pair_with_landmarks(clip, index, 4, opts, rng) if index is not None
                         else sample_rerender_pair_with_landmarks(clip, 4, opts, rng) if kind == "rerender"
                         else sample_learned_swap_pair_with_landmarks(clip, swapper, 4, opts, rng)
                         if kind == "learned" else sample_pair_with_landmarks(clip, 4, opts, rng))
            reals += r
            fakes += f
            marks += lms
            sources += [real_video_key(clip.file) if clip.kind == "video" else clip.file] * len(r)
    n, real_crops, fake_crops = len(reals), np.stack(reals), np.stack(fakes)
    del reals, fakes
    files, labels = np.array(sources * 2), np.r_[np.zeros(n, int), np.ones(n, int)]
    return {view: FeatureSet(np.concatenate([featurise(real_crops, marks), featurise(fake_crops, marks)]),
                             files, labels) for view, featurise in featurisers.items()}


FRAMINGS = ("full", "small", "tight")  # how sbi_features frames its pairs
REAL_VIDEO_FAMILY = "realvid"


def real_video_key(file: str) -> str:
    """The name a real video of ``--real`` goes by among the labelled clips: family ``realvid``,
    identity group ``realvid_<source family>`` (:mod:`tools.sbi.folds` groups single-label
    families by the stem before ``__``), so one source's people never straddle two folds."""
    return f"{REAL_VIDEO_FAMILY}_{family_of(file)}__{Path(file).stem}"


def is_real_video(files: np.ndarray) -> np.ndarray:
    """Which of ``files`` are real videos of ``--real`` (named by :func:`real_video_key`)."""
    return np.char.startswith(files.astype(str), REAL_VIDEO_FAMILY + "_")


def folds_with_real_videos(files: list[str], labels: dict[str, int], k: int, seed: int = 0) -> list[set[str]]:
    """Identity-grouped folds of the labelled clips, each joined by one of ``k`` source-grouped
    folds of the real videos; dealt apart, so the labelled clips split exactly as without them."""
    video = is_real_video(np.array(files))
    parts = []
    for subset in ([f for f, v in zip(files, video) if not v], [f for f, v in zip(files, video) if v]):
        if not subset:
            continue
        names = ["fake" if labels[f] else "real" for f in subset]
        groups = len(set(identity_groups(subset, names)))
        fold_sets = grouped_folds(subset, names, min(k, groups), seed=seed) if groups >= 2 else [set(subset)]
        parts.append(fold_sets + [set()] * (k - len(fold_sets)))  # fewer sources than folds
    return [set().union(*fold) for fold in zip(*parts)]


def cached(path: Path | None, keys: dict[str, str],
           build: Callable[[list[str]], dict[str, FeatureSet]]) -> dict[str, FeatureSet]:
    """Each view's features, stored as npz under ``path`` by the view's key (None: no cache);
    ``build(views)`` computes the views not stored yet, together."""
    files = {} if path is None else {v: path / f"features_{hashlib.sha1(k.encode()).hexdigest()[:12]}.npz"
                                     for v, k in keys.items()}
    out = {}
    for view, f in files.items():
        if f.exists():
            with np.load(f) as d:
                out[view] = FeatureSet(d["x"], d["files"], d["labels"])
    missing = [view for view in keys if view not in out]
    if missing:
        built = build(missing)
        for view in missing:
            out[view] = fs = built[view]
            if path is not None:
                path.mkdir(parents=True, exist_ok=True)
                np.savez(files[view], x=fs.x, files=fs.files, labels=fs.labels)
    return {view: out[view] for view in keys}


def family_balanced(weights: np.ndarray, files: np.ndarray, labels: np.ndarray, power: float) -> np.ndarray:
    """``weights`` rescaled so each (family, label) group's total is proportional to its clip
    count ** ``power`` (1: unchanged when every clip weighs the same; 0: every group the same),
    with the overall total kept."""
    out = weights.astype(np.float64).copy()
    families = np.array([family_of(str(f)) for f in files])
    for fam in np.unique(families):
        for label in (0, 1):
            group = (families == fam) & (labels == label)
            total = out[group].sum()
            if total > 0:
                out[group] *= len(np.unique(files[group])) ** power / total
    return out * (weights.sum() / out.sum()) if out.sum() > 0 else out


class FrameClassifier:
    """Standardised logistic regression; labelled clips weigh 1 each (or as ``family_balance``
    says, see :func:`family_balanced`), real videos of ``--real`` ``real_video_weight`` each,
    SBI frames ``sbi_weight`` times the labelled clips in all."""

    def __init__(self, c: float, sbi_weight: float, real_video_weight: float = 0.0,
                 family_balance: float = 1.0) -> None:
        self.c, self.sbi_weight, self.real_video_weight = c, sbi_weight, real_video_weight
        self.family_balance = family_balance

    def fit(self, lab: FeatureSet, keep: np.ndarray, sbi: FeatureSet | None,
            sbi_keep: np.ndarray | None = None) -> FrameClassifier:
        """Fit on the ``keep`` rows of ``lab`` and the ``sbi_keep`` rows (default all) of ``sbi``."""
        real_video = is_real_video(lab.files)
        if self.real_video_weight <= 0:
            keep = keep & ~real_video
        files = lab.files[keep]
        _, inverse, counts = np.unique(files, return_inverse=True, return_counts=True)
        clip_weight = np.where(real_video[keep], self.real_video_weight, 1.0)
        weight = clip_weight / counts[inverse]
        if self.family_balance != 1.0:
            labelled = ~real_video[keep]
            weight[labelled] = family_balanced(weight[labelled], files[labelled], lab.labels[keep][labelled],
                                               self.family_balance)
        xs, ys, ws = [lab.x[keep]], [lab.labels[keep]], [weight]
        if sbi is not None and self.sbi_weight > 0:
            rows = np.ones(len(sbi.x), bool) if sbi_keep is None else sbi_keep
            xs.append(sbi.x[rows])
            ys.append(sbi.labels[rows])
            labelled_total = ws[0][~real_video[keep]].sum() or 1.0  # no labelled rows: SBI alone
            ws.append(np.full(rows.sum(), self.sbi_weight * labelled_total / rows.sum()))
        x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
        self.scaler = StandardScaler().fit(x)
        self.lr = LogisticRegression(C=self.c, max_iter=3000).fit(self.scaler.transform(x), y,
                                                                   sample_weight=w / w.mean())
        return self

    def frame_logits(self, x: np.ndarray) -> np.ndarray:
        return self.lr.decision_function(self.scaler.transform(x))

    def folded(self) -> tuple[np.ndarray, float]:
        """Weights and bias on raw features (the scaler folded in)."""
        w = self.lr.coef_[0] / self.scaler.scale_
        return w.astype(np.float32), float(self.lr.intercept_[0] - np.dot(w, self.scaler.mean_))


def clip_logits(clf: FrameClassifier, lab: FeatureSet, rows: np.ndarray) -> dict[str, float]:
    z = clf.frame_logits(lab.x[rows])
    per: dict[str, list[float]] = defaultdict(list)
    for f, v in zip(lab.files[rows], z):
        per[str(f)].append(float(v))
    return {f: float(np.mean(v)) for f, v in per.items()}


def report(scores: dict[str, float], labels: dict[str, int], threshold: float) -> dict:
    """Pooled and per-family AUC (with its bootstrap interval) / EER / accuracy of the labelled
    clips, as ``stream-guard evaluate`` reports them. With real videos of ``--real`` among the
    scores, also ``with_real_videos``: the same with them counted among the reals, each fake
    family against all those reals, and the share of real videos at or above ``threshold``."""
    files = np.array(sorted(scores))
    video = is_real_video(files)
    lab_files = files[~video].tolist()
    ys, ss = [labels[f] for f in lab_files], [scores[f] for f in lab_files]
    out = metrics(ys, ss, threshold, AUC_INTERVAL_RESAMPLES)
    fams = [family_of(f) for f in lab_files]
    out["families"] = metrics_by_family(ys, ss, fams, threshold, ci_resamples=AUC_INTERVAL_RESAMPLES)
    if video.any():
        video_scores = [scores[f] for f in files[video]]
        reals = [s for s, y in zip(ss, ys) if not y] + video_scores
        ext = metrics(ys + [0] * len(video_scores), ss + video_scores, threshold, AUC_INTERVAL_RESAMPLES)
        ext["families"] = {}
        for fam in sorted({f for f, y in zip(fams, ys) if y}):
            fakes = [s for s, y, f in zip(ss, ys, fams) if y and f == fam]
            ext["families"][fam] = metrics([0] * len(reals) + [1] * len(fakes), reals + fakes, threshold,
                                           AUC_INTERVAL_RESAMPLES)
        ext["real_videos"] = len(video_scores)
        ext["real_videos_flagged"] = float(np.mean(np.asarray(video_scores) >= threshold))
        out["with_real_videos"] = ext
    return out


def fit_without_fold(clf: FrameClassifier, lab: FeatureSet, sbi: FeatureSet | None, test: set[str],
                     exclude_family: str | None = None) -> FrameClassifier:
    """``clf`` fitted on every labelled clip but ``test``'s (and ``exclude_family``'s), and on the
    pseudo-fake pairs not made from ``test``'s videos."""
    keep = ~np.isin(lab.files, list(test))
    if exclude_family is not None:
        keep &= np.array([family_of(f) for f in lab.files]) != exclude_family
    sbi_keep = None if sbi is None else ~np.isin(sbi.files, list(test))
    return clf.fit(lab, keep, sbi, sbi_keep)


def fold_sources(labelled: list[Clip], reals: list[Clip]) -> dict[str, FoldSource]:
    """Each cross-validated file's name (as ``crossval.json`` gives it) and where it came from."""
    sources = {c.file: FoldSource(c.file, "labelled", c.label) for c in labelled}
    return sources | {real_video_key(c.file): FoldSource(c.file, "real", "real") for c in reals if c.kind == "video"}


def write_fold_models(out: Path, release: ModelSpec, clf: FrameClassifier, lab: FeatureSet, sbi: FeatureSet | None,
                      folds: list[set[str]], oof: dict[str, float], sources: dict[str, FoldSource]) -> float:
    """Every fold's model under ``out`` (:mod:`tools.sbi.fold_models`); returns how far, at most, a
    file's mean frame logit through its fold's ONNX graph is from its cross-validated logit."""
    worst = 0.0
    for k, test in enumerate(folds):
        fitted = fit_without_fold(clf, lab, sbi, test)
        spec = write_fold_model(out, release, k, *fitted.folded())
        rows = np.isin(lab.files, list(test))
        through = clip_logits_through_onnx(spec, lab.x[rows], lab.files[rows])
        worst = max([worst] + [abs(v - oof[f]) for f, v in through.items()])
    write_folds_file(out, release, folds, sources, worst)
    return worst


def cross_validate(clf: FrameClassifier, lab: FeatureSet, sbi: FeatureSet | None, folds: list[set[str]],
                   labels: dict[str, int], exclude_family: str | None = None) -> dict[str, float]:
    """Out-of-fold clip logits (training also drops ``exclude_family`` when given)."""
    scores: dict[str, float] = {}
    for test in folds:
        is_test = np.isin(lab.files, list(test))
        s = clip_logits(fit_without_fold(clf, lab, sbi, test, exclude_family), lab, np.where(is_test)[0])
        scores.update(s if exclude_family is None else
                      {f: v for f, v in s.items() if family_of(f) == exclude_family or not labels[f]})
    return scores


def scores_without_each_family(clf: FrameClassifier, lab: FeatureSet, sbi: FeatureSet | None,
                               folds: list[set[str]], labels: dict[str, int]) -> dict[str, dict[str, float]]:
    """Per fake family: its fakes' and the folds' reals' logits from models fitted without that family."""
    return {fam: cross_validate(clf, lab, sbi, folds, labels, exclude_family=fam)
            for fam in sorted({family_of(f) for f, y in labels.items() if y})}


def family_metrics(scores: dict[str, dict[str, float]], labels: dict[str, int]) -> dict[str, dict]:
    """:func:`metrics` of each family's scores (as :func:`scores_without_each_family` gives them)."""
    return {fam: metrics([labels[f] for f in sorted(s)], [s[f] for f in sorted(s)], 0.0) for fam, s in scores.items()}


def leave_family_out(clf: FrameClassifier, lab: FeatureSet, sbi: FeatureSet | None, folds: list[set[str]],
                     labels: dict[str, int]) -> dict[str, dict]:
    """Per fake family: its fakes and the folds' reals, scored by models fitted without that family."""
    return family_metrics(scores_without_each_family(clf, lab, sbi, folds, labels), labels)


def auc_run(cv: dict, lofo: dict[str, dict]) -> dict[str, float | None]:
    """The AUCs of one cross-validation: pooled, per family, ``lofo:<family>``."""
    ext = {"pooled+realvid": cv["with_real_videos"]["auc"]} if "with_real_videos" in cv else {}
    return {"pooled": cv["auc"], **ext, **{f: v["auc"] for f, v in cv["families"].items()},
            **{f"lofo:{f}": v["auc"] for f, v in lofo.items()}}


def spread(runs: list[dict[str, float | None]]) -> dict:
    """Mean and standard deviation of each AUC that every run has (fold shuffles differ only in the split)."""
    keys = sorted(k for k in runs[0] if all(run.get(k) is not None for run in runs))
    return {"runs": runs,
            "mean": {k: round(float(np.mean([run[k] for run in runs])), 4) for k in keys},
            "std": {k: round(float(np.std([run[k] for run in runs])), 4) for k in keys}}


def shuffled_run(clf: FrameClassifier, lab: FeatureSet, sbi: FeatureSet | None, files: list[str],
                 labels: dict[str, int], k: int, seed: int, with_lofo: bool) -> dict[str, float | None]:
    """:func:`auc_run` for the fold split drawn with ``seed``."""
    folds = folds_with_real_videos(files, labels, k, seed=seed)
    cv = report(cross_validate(clf, lab, sbi, folds, labels), labels, 0.0)
    return auc_run(cv, leave_family_out(clf, lab, sbi, folds, labels) if with_lofo else {})


def smoke_clips(seed: int = 0) -> tuple[list[Clip], list[Clip]]:
    """Labelled synthetic clips (reals and self-blended fakes, two families) and real clips."""
    rng = np.random.default_rng(seed)
    labelled = []
    for k, clip in enumerate(synthetic_clips(12, seed=seed)):
        fam = "synA" if k % 2 else "synB"
        labelled.append(Clip(f"r{k}", f"real/{fam}_p{k}_real.mp4", "real", clip.kind, clip.frames, clip.boxes,
                             clip.landmarks))
        blend = sample_clip_blend(rng)
        fakes = np.stack([blend_frame(f, lm, blend, rng)[0] for f, lm in zip(clip.frames, clip.landmarks)])
        labelled.append(Clip(f"f{k}", f"fake/{fam}_p{k}_fake.mp4", "fake", clip.kind, fakes, clip.boxes,
                             clip.landmarks))
    return labelled, synthetic_clips(6, seed=seed + 1)


def parse_lofo(text: str) -> tuple[tuple[str, ...], Path]:
    """``"aniportrait,sadtalker=B/oof.json"`` -> ``(("aniportrait", "sadtalker"), Path("B/oof.json"))``."""
    fams, sep, path = text.partition("=")
    names = tuple(f.strip() for f in fams.split(",") if f.strip())
    if not sep or not names or not path:
        raise argparse.ArgumentTypeError(f"expected FAMILY[,FAMILY...]=oof.json, got {text!r}")
    return names, Path(path)


def parse_taps(text: str) -> tuple[int, ...]:
    """``"0,2,4"`` -> ``(0, 2, 4)``: EfficientNet-Lite0 block indices (0-15; the encoder sorts them)."""
    try:
        taps = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block numbers, got {text!r}") from None
    if min(taps) < 0 or max(taps) > 15:
        raise argparse.ArgumentTypeError(f"block numbers must be 0-15, got {text!r}")
    return taps


def parse_names(allowed: tuple[str, ...], what: str):
    """An argparse type: ``"a,b"`` -> ``("a", "b")``, each among ``allowed``."""
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(g.strip() for g in text.split(",") if g.strip())
        if not names or set(names) - set(allowed):
            raise argparse.ArgumentTypeError(f"expected {what} among {','.join(allowed)}, got {text!r}")
        return names
    return parse


parse_groups = parse_names(ALL_REGION_GROUPS, "groups")  # RegionStatsEncoder feature groups
parse_views = parse_names(ALL_REGION_VIEWS, "views")  # RegionStatsEncoder views


def feature_key(size: int, margin: float, taps: tuple[int, ...], groups: tuple[str, ...], max_frames: int,
                labelled: Path | None, view: str = REGION_VIEWS[0]) -> str:
    """The feature cache's key for one view of one encoder configuration (the default groups and
    view keep older keys)."""
    key = f"{size}|{margin}|{taps}|{max_frames}|{labelled}"
    key = key if groups == REGION_GROUPS else f"{key}|{','.join(groups)}"
    return key if view == REGION_VIEWS[0] else f"{view}|{key}"


LANDMARK_VIEW = "lmregions"  # view_features' name for the landmark-region contrasts


@dataclass(frozen=True)
class LearnedSwaps:
    """A trained swap generator (:mod:`tools.swapgen`) and the digest of its file, which keys its pairs' cache."""

    swapper: FaceSwapper
    digest: str

    @classmethod
    def load(cls, path: Path) -> LearnedSwaps:
        return cls(FaceSwapper.load(path), hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12])


def view_graph(args: argparse.Namespace, view: str,
               backbone: Encoder) -> tuple[torch.nn.Module, tuple[int, ...], str]:
    """``view``'s frozen graph, the region-mask sizes it takes and its feature cache key; ``view`` is
    one of :data:`ALL_REGION_VIEWS`, or :data:`LANDMARK_VIEW` for the colour view's landmark contrasts."""
    if view == LANDMARK_VIEW:
        enc = RegionStatsEncoder(args.size, args.margin, args.taps, encoder=backbone, landmark_regions=True)
        graph: torch.nn.Module = LandmarkContrastGraph(enc)
        key = "lmregions|" + feature_key(args.size, args.margin, enc.taps, REGION_GROUPS, args.max_frames,
                                         args.labelled)
    else:
        enc = graph = RegionStatsEncoder(args.size, args.margin, args.taps, encoder=backbone, groups=args.features,
                                         views=(view,)).eval()
        key = feature_key(args.size, args.margin, enc.taps, enc.groups, args.max_frames, args.labelled, view)
    return graph, enc.region_sizes, key


def view_features(args: argparse.Namespace, views: tuple[str, ...], backbone: Encoder, labelled: list[Clip],
                  reals: list[Clip], learned: LearnedSwaps | None = None) -> tuple[FeatureSet, FeatureSet | None]:
    """The features of ``views`` side by side (see :func:`view_graph`): of the labelled clips
    (real videos of ``reals`` appended) and of the pseudo-fake pairs (None without ``reals``),
    cached under ``args.work`` view by view. Each set of crops is made once, for every view it lacks."""
    graphs = {view: view_graph(args, view, backbone) for view in views}
    featurisers: Featurisers = {}  # exported on first use: a run served from the cache exports nothing

    def featuriser(view: str) -> Featuriser:
        if view not in featurisers:
            graph, region_sizes, _ = graphs[view]
            featurisers[view] = OnnxFeaturiser(graph, args.size, region_sizes, threads=args.threads)
        return featurisers[view]

    def part(name: Callable[[str], str], build: Callable[[Featurisers], dict[str, FeatureSet]]) -> FeatureSet:
        sets = cached(args.work, {v: name(key) for v, (_, _, key) in graphs.items()},
                      lambda missing: build({v: featuriser(v) for v in missing}))
        return side_by_side([sets[v] for v in views])

    lab = [part(lambda key: "lab|" + key,
                lambda fs: labelled_features(fs, labelled, args.size, args.margin, args.max_frames))]
    videos = [replace(c, file=real_video_key(c.file)) for c in reals if c.kind == "video"]
    if videos:
        lab.append(part(lambda key: f"realvid|{key}|{args.real}",
                        lambda fs: labelled_features(fs, videos, args.size, args.margin, args.max_frames)))
    passes = (("sbi-by-source", args.sbi_draws, "full", "self", 1),
              ("sbi-small-faces", args.sbi_small_face_draws, "small", "self", 1),
              ("sbi-tight-faces", args.sbi_tight_face_draws, "tight", "self", 17),
              ("swaps", args.swap_draws, "full", "swap", 11),
              ("swaps-small-faces", args.swap_small_face_draws, "small", "swap", 12),
              ("swaps-tight-faces", args.swap_tight_face_draws, "tight", "swap", 18),
              ("rerender", args.rerender_draws, "full", "rerender", 13),
              ("rerender-small-faces", args.rerender_small_face_draws, "small", "rerender", 14),
              ("learned-swaps", args.learned_swap_draws, "full", "learned", 15),
              ("learned-swaps-small-faces", args.learned_swap_small_face_draws, "small", "learned", 16))
    swapper = None if learned is None else learned.swapper
    generator = "" if learned is None else f"|{learned.digest}"  # a new generator: new pairs
    sbi_sets = [part(lambda key: f"{name}|{key}|{args.real}|{draws}" + (generator if kind == "learned" else ""),
                     lambda fs: sbi_features(fs, reals, args.size, args.margin, draws, seed=seed,
                                             framing=framing, kind=kind, swapper=swapper))
                for name, draws, framing, kind, seed in passes if reals and draws > 0]
    return concat(lab), concat(sbi_sets) if sbi_sets else None


def add_pass_options(ap: argparse.ArgumentParser, flag: str, pseudo_fakes: str) -> None:
    """``--FLAG-draws`` and ``--FLAG-small-face-draws``: passes over ``--real`` of one kind of pseudo-fake."""
    ap.add_argument(f"--{flag}-draws", type=int, default=0,
                    help=f"passes over --real whose pseudo-fakes are {pseudo_fakes}; they share the SBI weight")
    ap.add_argument(f"--{flag}-small-face-draws", type=int, default=0,
                    help="the same, every pair shrunk to a small face and H.264-re-encoded")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labelled", type=Path, help="face cache of labelled clips (tools.sbi.prepare_faces)")
    ap.add_argument("--real", type=Path, help="face cache of real faces for self-blended pairs")
    ap.add_argument("--out", type=Path, required=True, help="model folder to write")
    ap.add_argument("--smoke", action="store_true", help="synthetic faces, tiny sizes (for tests)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--margin", type=float, default=0.25)
    ap.add_argument("--taps", type=parse_taps, default=REGION_TAPS,
                    help="EfficientNet-Lite0 blocks whose feature maps are summarised (comma-separated)")
    ap.add_argument("--features", type=parse_groups, default=REGION_GROUPS,
                    help="feature groups of the region encoder, comma-separated among "
                         f"{','.join(ALL_REGION_GROUPS)} (default: {','.join(REGION_GROUPS)})")
    ap.add_argument("--views", type=parse_views, default=REGION_VIEWS,
                    help="copies of each crop the region encoder summarises, comma-separated among "
                         f"{','.join(ALL_REGION_VIEWS)} (default: {','.join(REGION_VIEWS)}; greystd: grey, "
                         "contrast-standardised, through a second pass of the frozen blocks)")
    ap.add_argument("--landmark-regions", action="store_true",
                    help="also contrast face regions that follow the face-mesh landmarks (the seam inside and "
                         "outside the face oval, mouth and eyes against the face core) in the colour view's maps; "
                         "the exported encoder then also takes the region masks, one input per feature-map size")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--sample-hz", type=float, default=10.0)
    ap.add_argument("--max-frames", type=int, default=64, help="frames per labelled clip")
    ap.add_argument("--sbi-draws", type=int, default=2, help="passes over --real (4 frames per clip each)")
    ap.add_argument("--sbi-small-face-draws", type=int, default=0,
                    help="more passes over --real whose pairs are all shrunk to small faces (60-105 px) and "
                         "H.264-re-encoded, as in the dev DeepFaceLive demos; they share the SBI weight")
    ap.add_argument("--sbi-tight-face-draws", type=int, default=0,
                    help="more passes over --real whose pairs are all cut down to 1-1.35 times the face box, as "
                         "face-crop datasets keep faces; they share the SBI weight")
    add_pass_options(ap, "swap", "another person's face blended in (tools.sbi.swap_blend, after Face X-ray)")
    ap.add_argument("--swap-tight-face-draws", type=int, default=0,
                    help="passes of face-swap pairs cut down to 1-1.35 times the face box")
    add_pass_options(ap, "rerender", "the face re-rendered as a talking-head generator would "
                                     "(tools.sbi.rerender_blend)")
    ap.add_argument("--learned-swaps", type=Path, metavar="SWAPGEN_PT",
                    help="a trained swap generator (tools.swapgen.train's swapgen.pt) for the two options below")
    add_pass_options(ap, "learned-swap", "the face redrawn as another identity by --learned-swaps, blended in")
    ap.add_argument("--sbi-weight", type=float, default=1.0, help="SBI frames' total weight / labelled clips'")
    ap.add_argument("--real-video-weight", type=float, default=0.0,
                    help="training weight of each real video of --real, relative to one labelled clip "
                         "(0: they are only scored, out of fold)")
    ap.add_argument("--c", type=float, default=0.001, help="inverse L2 strength of the logistic regression")
    ap.add_argument("--family-balance", type=float, default=1.0, metavar="P",
                    help="each family's labelled fakes (and reals) weigh as their clip count ** P "
                         "(1: every clip the same; 0: every family the same)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1,
                    help="also report mean and spread of the AUCs over this many fold shuffles")
    ap.add_argument("--leave-family-out", action="store_true")
    ap.add_argument("--target-fpr", type=float, default=0.10,
                    help="share of out-of-fold real clips allowed above the threshold")
    ap.add_argument("--real-video-fpr", type=float, metavar="F",
                    help="also keep at most this share of the out-of-fold real videos of --real above the threshold "
                         "(the threshold is then the higher of the two points; default: dev reals alone)")
    ap.add_argument("--work", type=Path, help="feature cache folder (reruns skip encoding)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--e2e", type=Path, help="weights.pt of tools.sbi.finetune_cv --final, joined to the model")
    ap.add_argument("--e2e-oof", type=Path, help="its oof.json (same folds as this run), for the mix and the figures")
    ap.add_argument("--e2e-weight", type=float, default=0.4, help="the CNN's share of the standardised mix")
    ap.add_argument("--e2e-lofo", type=parse_lofo, action="append", default=[], metavar="FAMILIES=OOF",
                    help="oof.json of finetune_cv --exclude-family FAMILIES (same folds), for the mix's "
                         "leave-family-out figures; repeat until every fake family is covered")
    ap.add_argument("--fold-models", type=Path, metavar="DIR",
                    help="also write each fold's model (the seed-0 folds of crossval.json) and DIR/folds.json, "
                         "to score every clip out of fold through the pipeline (tools.sbi.live_out_of_fold)")
    ap.add_argument("--fp16-weights", action="store_true",
                    help="store the encoder's weights as float16 (half the file; checked against float32)")
    ap.add_argument("--name", default="regionstats-effnetlite0")
    ap.add_argument("--version", default="0.4.1")
    args = ap.parse_args(argv)
    if (args.e2e is None) != (args.e2e_oof is None):
        ap.error("--e2e and --e2e-oof go together")
    if args.e2e and args.landmark_regions:
        ap.error("--e2e mixes do not take --landmark-regions yet")
    if args.fold_models and args.e2e:
        ap.error("--fold-models does not take --e2e mixes")
    if args.e2e_lofo and not (args.e2e_oof and args.leave_family_out):
        ap.error("--e2e-lofo needs --e2e, --e2e-oof and --leave-family-out")
    learned = None
    if args.learned_swap_draws + args.learned_swap_small_face_draws > 0:
        if args.learned_swaps is None:
            ap.error("--learned-swap-draws and --learned-swap-small-face-draws need --learned-swaps")
        try:
            learned = LearnedSwaps.load(args.learned_swaps)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            ap.error(f"--learned-swaps {args.learned_swaps}: {e}")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.smoke:
        args.size, args.folds, args.max_frames = 64, 2, 4
        labelled, reals = smoke_clips()
    else:
        if args.labelled is None:
            ap.error("--labelled is required (or --smoke)")
        labelled = load_cache(args.labelled)
        reals = load_cache(args.real, labels={"real"}) if args.real else []
    backbone = Encoder()  # ImageNet Lite0, loaded once and shared by every view's encoder
    if args.landmark_regions and "colour" not in args.views:
        ap.error("--landmark-regions contrasts the colour view's maps: --views must include colour")
    enc = RegionStatsEncoder(args.size, args.margin, args.taps, encoder=backbone, groups=args.features,
                             views=args.views, landmark_regions=args.landmark_regions).eval()
    views = enc.views + ((LANDMARK_VIEW,) if args.landmark_regions else ())
    region_sizes = enc.region_sizes  # enc may become an ensemble's below; the masks it takes stay these
    lab, sbi = view_features(args, views, backbone, labelled, reals, learned)
    print(f"features: {len(lab.x)} labelled frames ({is_real_video(lab.files).sum()} of real videos), "
          f"{0 if sbi is None else len(sbi.x)} SBI frames, "
          f"dim {lab.x.shape[1]} ({time.time() - t0:.0f} s)", flush=True)

    labels = {str(f): int(y) for f, y in zip(lab.files, lab.labels)}
    files = sorted(labels)
    folds = folds_with_real_videos(files, labels, args.folds)
    if not 0.0 <= args.family_balance <= 1.0:
        ap.error("--family-balance must be between 0 and 1")
    if args.real_video_fpr is not None and not 0.0 <= args.real_video_fpr <= 1.0:
        ap.error("--real-video-fpr must be between 0 and 1")
    clf = FrameClassifier(args.c, args.sbi_weight, args.real_video_weight, args.family_balance)
    oof = cross_validate(clf, lab, sbi, folds, labels)
    parts, mix = {}, None
    cnn_without: dict[str, dict[str, float]] = {}
    if args.e2e_oof:
        try:
            cnn_oof = load_oof(args.e2e_oof, folds)
            for fams, path in args.e2e_lofo:
                cnn_without |= dict.fromkeys(fams, load_oof(path, folds))
        except ValueError as e:
            ap.error(str(e))
        fake_families = {family_of(f) for f, y in labels.items() if y}
        if args.e2e_lofo and not fake_families <= cnn_without.keys():
            ap.error(f"--e2e-lofo covers {sorted(cnn_without)}, not every fake family {sorted(fake_families)}")
        mix = ScoreMix.fit(oof, cnn_oof, args.e2e_weight)
        parts = {"regionstats": report(oof, labels, 0.0), "e2e_cnn": report(cnn_oof, labels, 0.0),
                 "mix": vars(mix)}
        oof = {f: mix(oof[f], cnn_oof[f]) for f in files}
    z = np.array([oof[f] for f in files])
    y = np.array([labels[f] for f in files])
    # Calibrated on the labelled clips alone, as before real videos were scored: those score
    # higher than the dev reals, and with them the 10 % point would catch almost no fake.
    is_labelled = ~is_real_video(np.array(files))
    a, b, _, threshold = calibrate(z[is_labelled], y[is_labelled], args.target_fpr)
    probs = dict(zip(files, (1 / (1 + np.exp(-(a * z + b)))).tolist()))
    if args.real_video_fpr is not None and not is_labelled.all():
        video_probs = np.array([probs[f] for f in np.array(files)[~is_labelled]])
        # just above the quantile: a video scoring exactly there would be flagged (scores >= threshold)
        threshold = max(threshold, float(np.nextafter(np.quantile(video_probs, 1 - args.real_video_fpr), 1.0)))
    cv = report(probs, labels, threshold)
    cv.update({"protocol": f"{args.folds} folds grouped by identity (tools/sbi/folds.py); "
                           "score = calibrated mean frame logit of each clip, from a model that never saw it; "
                           "real videos of --real count among the reals of with_real_videos and "
                           "leave_family_out; calibration and threshold come from the labelled clips" +
                           (f", the threshold raised to flag at most {args.real_video_fpr:.0%} of the real videos"
                            if args.real_video_fpr is not None else ""),
               "folds": [sorted(f) for f in folds], "scores": probs})
    if parts:  # repeats below refit the region part only: the CNN's folds are fixed
        cv["parts"] = {**parts, "note": ("repeats are of the regionstats part alone; leave_family_out mixes both "
                                         "parts, each trained without the family" if cnn_without else
                                         "leave_family_out and repeats are of the regionstats part alone")}
    if args.leave_family_out:
        without = scores_without_each_family(clf, lab, sbi, folds, labels)
        if cnn_without:  # the region part's own figures stay, for the repeats (which refit it alone)
            cv["parts"]["regionstats"]["leave_family_out"] = family_metrics(without, labels)
            without = {fam: {f: mix(v, cnn_without[fam][f]) for f, v in s.items()} for fam, s in without.items()}
        cv["leave_family_out"] = family_metrics(without, labels)
        cv["leave_family_out_scores"] = without  # raw logits, for tools.sbi.compare_releases
    if args.repeats > 1:  # AUCs are unchanged by the calibration, so the split above is run 0
        first = parts["regionstats"] if parts else cv  # shuffles 1.. refit the region part alone
        first_lofo = first.get("leave_family_out", cv.get("leave_family_out", {}))
        cv["repeats"] = spread([auc_run(first, first_lofo)] + [
            shuffled_run(clf, lab, sbi, files, labels, args.folds, seed, args.leave_family_out)
            for seed in range(1, args.repeats)])
        print("over", args.repeats, "fold shuffles:", json.dumps(cv["repeats"]["mean"]), flush=True)
    print(f"cross-validated pooled AUC {cv['auc']:.3f}; " + ", ".join(
        f"{k} {v['auc']:.3f}" for k, v in cv["families"].items() if v["auc"] is not None), flush=True)
    if "with_real_videos" in cv:
        ext = cv["with_real_videos"]
        print(f"with {ext['real_videos']} real videos among the reals: pooled AUC {ext['auc']:.3f}, "
              f"{ext['real_videos_flagged']:.0%} of them flagged at the threshold", flush=True)

    clf.fit(lab, np.ones(len(lab.x), bool), sbi)
    w, bias = clf.folded()
    head = TemporalHead.frame_average(w, bias)
    description = ("Frozen ImageNet EfficientNet-Lite0 region statistics (inner face vs surround) + a "
                   "logistic frame classifier fitted on labelled clips and self-blended pseudo-fakes")
    if enc.groups != REGION_GROUPS:
        description += f" (feature groups: {', '.join(enc.groups)})"
    if "greystd" in enc.views:
        description += ", beside the same statistics of a grey, contrast-standardised copy of each crop"
    if args.landmark_regions:
        description += (", and contrasts of face regions that follow the face-mesh landmarks (the seam inside and "
                        "outside the face oval, mouth and eyes against the face core)")
    if args.family_balance != 1.0:
        description += f" (each family weighted as its clip count ** {args.family_balance:g})"
    if args.sbi_small_face_draws > 0:
        description += (f"; {args.sbi_small_face_draws} of the {args.sbi_draws + args.sbi_small_face_draws} "
                        "self-blended passes shrunk to small, H.264-re-encoded faces")
    swap_draws = args.swap_draws + args.swap_small_face_draws
    if swap_draws > 0:
        description += (f"; {swap_draws} more passes of face-swap pseudo-fakes (another person's face blended in"
                        + (f", {args.swap_small_face_draws} of them small faces)" if args.swap_small_face_draws
                           else ")"))
    tight_draws = args.sbi_tight_face_draws + args.swap_tight_face_draws
    if tight_draws > 0:
        description += (f"; {tight_draws} more passes of pseudo-fakes cut down to the face (1-1.35 times its box), "
                        "as face-crop datasets keep faces")
    rerender_draws = args.rerender_draws + args.rerender_small_face_draws
    if rerender_draws > 0:
        description += (f"; {rerender_draws} more passes of re-rendered pseudo-fakes (the face warped around the "
                        "mouth, resampled and pasted back, as a talking-head generator's)")
    learned_draws = args.learned_swap_draws + args.learned_swap_small_face_draws
    if learned_draws > 0:
        description += (f"; {learned_draws} more passes of learned face swaps (faces redrawn as other people by a "
                        "swap autoencoder trained on the real faces, tools.swapgen)")
    if mix is not None:
        try:
            enc, head = ensemble(enc, w, bias, args.e2e, mix, args.size, args.margin)
        except ValueError as e:
            ap.error(str(e))
        description += (f", mixed {1 - mix.weight:.2f} / {mix.weight:.2f} (standardised logits) with an "
                        "EfficientNet-Lite0 fine-tuned end to end (tools.sbi.finetune_cv)")
    args.out.mkdir(parents=True, exist_ok=True)
    region_names = REGION_NAMES if args.landmark_regions else ()
    export_graphs(enc, head, args.size, args.window, args.out, dim=enc.dim,
                  regions=[(len(region_names), s) for s in region_sizes])
    sample = np.stack([crop_face(c.frames[0], c.boxes[0], args.size, args.margin) for c in labelled[:6]])
    masks = [m.numpy() for m in crop_regions(
        [transform_points(c.landmarks[0], crop_matrix(c.boxes[0], args.size, args.margin)) for c in labelled[:6]],
        args.size, region_sizes)]
    diff = parity(enc, head, args.out, sample, args.window, masks)
    fp16 = None
    if args.fp16_weights:
        x = to_tensor(sample, torch.device("cpu")).contiguous().numpy()
        before = onnx_frame_logits(args.out, x, masks)
        store_weights_fp16(args.out / "encoder.onnx")
        fp16 = {"max_frame_logit_change": float(np.abs(onnx_frame_logits(args.out, x, masks) - before).max()),
                "tolerance": FP16_LOGIT_TOL}
    spec = ModelSpec(
        folder=args.out.resolve(), name=args.name, version=args.version, trained=True,
        encoder_path=(args.out / "encoder.onnx").resolve(), temporal_path=(args.out / "temporal.onnx").resolve(),
        input_size=args.size, mean=MEAN, std=STD, crop_margin=args.margin, embedding_dim=enc.dim,
        window=args.window, sample_hz=args.sample_hz, threshold=round(threshold, 4), calibration_a=a,
        calibration_b=b, regions=region_names, region_sizes=region_sizes,
        operating_points=measure_points([labels.get(f, 0) for f in files], [probs[f] for f in files],
                                        round(threshold, 4)),
        description=(f"{description}; window logit = mean frame logit (GRU correction zero). Cross-validated pooled AUC "
                     f"{cv['auc']:.3f} ({args.folds} identity-grouped folds). Training faces carry research / "
                     "non-commercial terms, which the weights inherit."),
    )
    spec.save()
    if fp16 is not None:
        cv["fp16_weights"] = fp16
    cv.update({"parity_max_abs": diff, "calibration": [a, b], "threshold": threshold,
               "seconds": round(time.time() - t0, 1), "config": {k: str(v) for k, v in vars(args).items()}})
    (args.out / "crossval.json").write_text(json.dumps(cv, indent=2) + "\n")
    print(json.dumps({"auc": cv["auc"], "parity_max_abs": diff, "threshold": threshold}))
    if args.fold_models is not None:
        diff_folds = write_fold_models(args.fold_models, spec, clf, lab, sbi, folds, oof,
                                       fold_sources(labelled, reals))
        print(f"{len(folds)} fold models -> {args.fold_models}; their clip logits through ONNX Runtime are within "
              f"{diff_folds:.2g} of the cross-validated ones", flush=True)
        if diff_folds > FOLD_LOGIT_TOL:
            print(f"FOLD MODELS FAILED: clip logits {diff_folds:.4f} from the cross-validated ones > {FOLD_LOGIT_TOL}",
                  file=sys.stderr)
            return 1
    if fp16 is not None and fp16["max_frame_logit_change"] > FP16_LOGIT_TOL:
        print(f"FP16 WEIGHTS FAILED: frame logits moved {fp16['max_frame_logit_change']:.4f} > {FP16_LOGIT_TOL}",
              file=sys.stderr)
        return 1
    return parity_exit_code(diff)


if __name__ == "__main__":
    raise SystemExit(main())
