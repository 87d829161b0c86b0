"""Detection-quality figures shared by ``stream-guard evaluate`` and the training tools:
file families, AUC (with a bootstrap interval) / EER / accuracy, false-alarm thresholds. Needs no
video stack."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.stats import bootstrap, rankdata
from sklearn.metrics import roc_auc_score, roc_curve

LABELS = {"real": 0, "fake": 1}  # as manifests and reports spell them
AUC_INTERVAL_LEVEL = 0.95
AUC_INTERVAL_RESAMPLES = 2000


def family_of(file_name: str) -> str:
    """``dfl_Keanu_Reeves_0_L.mp4`` -> ``dfl``; ``images/meso_x.jpg`` -> ``meso``."""
    return Path(file_name).name.split("_", 1)[0].split(".", 1)[0]


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate: where the false-positive rate meets the false-negative rate."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def _auc_of_samples(reals: np.ndarray, fakes: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUC as the Mann-Whitney statistic (ties count half), over the last axis of each
    sample, so that a whole batch of bootstrap resamples is scored at once."""
    reals, fakes = np.moveaxis(reals, axis, -1), np.moveaxis(fakes, axis, -1)
    n_fake, n_real = fakes.shape[-1], reals.shape[-1]
    batch = np.broadcast_shapes(reals.shape[:-1], fakes.shape[:-1])  # one side may be fixed
    reals, fakes = np.broadcast_to(reals, batch + (n_real,)), np.broadcast_to(fakes, batch + (n_fake,))
    ranks = rankdata(np.concatenate([fakes, reals], axis=-1), axis=-1)
    return (ranks[..., :n_fake].sum(axis=-1) - n_fake * (n_fake + 1) / 2) / (n_fake * n_real)


def _stratified_bootstrap(labels: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
                          resamples: int, level: float, seed: int) -> tuple[float, float, np.ndarray] | None:
    """Percentile interval and distribution of ``statistic(real_rows, fake_rows)``, where the two
    arguments are batches of row numbers drawn with replacement from the reals and from the
    fakes separately (so every resample has both labels and keeps their balance; the same rows
    index every model's scores, which keeps them paired). None unless both labels are present."""
    reals, fakes = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    if not len(reals) or not len(fakes):
        return None
    # scipy resamples only samples of two or more; a single file resamples to itself anyway
    if len(reals) == 1 and len(fakes) == 1:
        value = float(statistic(reals, fakes))
        return value, value, np.array([value])
    if len(reals) == 1:
        data, wrapped = (fakes,), lambda f, axis=-1: statistic(reals, f)
    elif len(fakes) == 1:
        data, wrapped = (reals,), lambda r, axis=-1: statistic(r, fakes)
    else:
        data, wrapped = (reals, fakes), lambda r, f, axis=-1: statistic(r, f)
    result = bootstrap(data, wrapped, n_resamples=resamples, batch=200, vectorized=True,
                       confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return float(interval.low), float(interval.high), result.bootstrap_distribution


def auc_interval(labels: list[int], scores: list[float], resamples: int = AUC_INTERVAL_RESAMPLES,
                 level: float = AUC_INTERVAL_LEVEL, seed: int = 0) -> list[float] | None:
    """Bootstrap interval ``[low, high]`` of the AUC, or None unless both labels are present.

    Reals and fakes are resampled separately (stratified); percentile method, fixed seed (the
    same input always gives the same interval). With a handful of files per label the interval
    is wide, which is the point: it says how far the AUC of so few files can be trusted."""
    s = np.asarray(scores, float)
    found = _stratified_bootstrap(np.asarray(labels), lambda r, f: _auc_of_samples(s[r], s[f]),
                                  resamples, level, seed)
    return None if found is None else [found[0], found[1]]


def paired_auc_difference(labels: list[int], scores_a: list[float], scores_b: list[float],
                          resamples: int = AUC_INTERVAL_RESAMPLES, level: float = AUC_INTERVAL_LEVEL,
                          seed: int = 0) -> dict | None:
    """How much model A's AUC beats model B's on the same files: ``difference`` (A minus B),
    its paired bootstrap interval ``difference_ci`` (both models' scores of a file are drawn
    together, so what the files share cancels), and ``share_not_better``, the share of
    resamples in which A does not beat B (a one-sided bootstrap p-value). None unless both
    labels are present."""
    y, a, b = np.asarray(labels), np.asarray(scores_a, float), np.asarray(scores_b, float)
    found = _stratified_bootstrap(y, lambda r, f: _auc_of_samples(a[r], a[f]) - _auc_of_samples(b[r], b[f]),
                                  resamples, level, seed)
    if found is None:
        return None
    low, high, distribution = found
    auc_a = float(_auc_of_samples(a[y == 0], a[y == 1]))
    auc_b = float(_auc_of_samples(b[y == 0], b[y == 1]))
    return {"auc_a": auc_a, "auc_b": auc_b, "difference": auc_a - auc_b, "difference_ci": [low, high],
            "share_not_better": float(np.mean(distribution <= 0)), "n_real": int(np.sum(y == 0)),
            "n_fake": int(np.sum(y == 1))}


def metrics(labels: list[int], scores: list[float], threshold: float, ci_resamples: int = 0) -> dict:
    """AUC, EER and accuracy at ``threshold``; AUC and EER are null unless both labels are present.
    With ``ci_resamples``, also ``auc_ci``: :func:`auc_interval` from that many resamples."""
    y, s = np.asarray(labels), np.asarray(scores, float)
    both = len(set(labels)) == 2
    out = {
        "auc": float(roc_auc_score(y, s)) if both else None,
        "eer": eer(y, s) if both else None,
        "accuracy": float(np.mean((s >= threshold) == (y == 1))) if len(y) else None,
        "n_real": int(np.sum(y == 0)),
        "n_fake": int(np.sum(y == 1)),
    }
    if ci_resamples:
        out["auc_ci"] = auc_interval(labels, scores, ci_resamples)
    return out


def metrics_by_family(labels: list[int], scores: list[float], families: list[str], threshold: float,
                      names: list[str] | None = None, ci_resamples: int = 0) -> dict[str, dict]:
    """:func:`metrics` per family (``names``: every family to report, default those present)."""
    return {
        name: metrics([y for y, f in zip(labels, families) if f == name],
                      [s for s, f in zip(scores, families) if f == name], threshold, ci_resamples)
        for name in (names if names is not None else sorted(set(families)))
    }


FALSE_ALARM_TARGETS = (0.01, 0.05, 0.10)


def shares_flagged(labels: list[int], scores: list[float], threshold: float) -> tuple[float | None, float | None]:
    """The shares of the reals and of the fakes that score at or above ``threshold`` (None where there are none)."""
    y, s = np.asarray(labels), np.asarray(scores, float)
    reals, fakes = s[y == 0], s[y == 1]
    return (float(np.mean(reals >= threshold)) if len(reals) else None,
            float(np.mean(fakes >= threshold)) if len(fakes) else None)


def false_alarm_thresholds(labels: list[int], scores: list[float],
                           targets: tuple[float, ...] = FALSE_ALARM_TARGETS) -> list[dict]:
    """Per target rate: the lowest threshold (to 3 decimals) at which at most that share of the
    real files score at or above it, with the shares of reals and fakes it flags. Empty
    without real files; ``threshold`` is None where even 1.0 would flag too many."""
    y, s = np.asarray(labels), np.asarray(scores, float)
    reals = np.sort(s[y == 0])[::-1]
    out = []
    for target in targets if len(reals) else ():
        allowed = int(math.floor(target * len(reals) + 1e-9))  # reals that may score at or above it
        milli = max(int(math.floor(reals[allowed] * 1000)), 0)  # reals[allowed] must stay below
        while milli <= 1000 and np.sum(reals >= milli / 1000) > allowed:
            milli += 1
        threshold, ok = milli / 1000, milli <= 1000
        reals_flagged, fakes_caught = shares_flagged(labels, scores, threshold) if ok else (None, None)
        out.append({"target": target, "threshold": round(threshold, 3) if ok else None,
                    "reals_flagged": reals_flagged, "fakes_caught": fakes_caught})
    return out
