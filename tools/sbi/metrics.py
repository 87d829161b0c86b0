"""Small metrics without extra dependencies."""
from __future__ import annotations

import sys

import numpy as np
from scipy.stats import rankdata

from stream_guard.model.contract import DEFAULT_POINT, OperatingPoint
from stream_guard.scoring import false_alarm_thresholds, shares_flagged


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count half); NaN when one class is missing."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling: ``a, b`` minimising the log loss of ``sigmoid(a * logit + b)``
    with Platt's smoothed targets (L-BFGS on a numerically stable loss)."""
    from scipy.optimize import minimize

    x = np.asarray(logits, np.float64).reshape(-1)
    y = np.asarray(labels, np.float64).reshape(-1)
    n_pos, n_neg = y.sum(), (1 - y).sum()
    t = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        z = ab[0] * x + ab[1]
        value = np.mean(np.logaddexp(0.0, z) - t * z)
        r = 1 / (1 + np.exp(-np.clip(z, -60, 60))) - t
        return float(value), np.array([np.mean(r * x), np.mean(r)])

    res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return float(res.x[0]), float(res.x[1])


def calibrate(logits: np.ndarray, labels: np.ndarray, target_fpr: float) -> tuple[float, float, np.ndarray, float]:
    """Platt ``a, b``, the calibrated probabilities, and the threshold that lets ``target_fpr``
    of the reals through (at least 0.5). An inverted or flat fit (``a <= 0``) would flip the
    scores, so raw logits are kept instead, with a warning on stderr."""
    a, b = platt(logits, labels)
    if not a > 0:
        print(f"warning: Platt fit a={a:.3f} <= 0; using a=1, b=0", file=sys.stderr)
        a, b = 1.0, 0.0
    probs = 1 / (1 + np.exp(-(a * np.asarray(logits) + b)))
    threshold = float(max(0.5, np.quantile(probs[np.asarray(labels) == 0], 1 - target_fpr)))
    return a, b, probs, threshold


# name -> the share of held-out reals it may flag
REAL_SHARES = {"quiet": 0.10, "sensitive": 0.30}


def measure_points(labels: list[int], scores: list[float], threshold: float,
                   shares: dict[str, float] = REAL_SHARES) -> tuple[OperatingPoint, ...]:
    """``default`` at ``threshold``, then one point per entry of ``shares`` (skipped where even
    1.0 would flag more reals than allowed), each with the shares of reals and fakes it flags.
    None without held-out scores of both reals and fakes: there is nothing to measure them on."""
    if not (0 in labels and 1 in labels):
        return ()

    def point(name: str, t: float) -> OperatingPoint:
        reals, fakes = shares_flagged(labels, scores, t)
        return OperatingPoint(name, t, round(reals, 4), round(fakes, 4))

    rows = [false_alarm_thresholds(labels, scores, (share,))[0] for share in shares.values()]
    return (point(DEFAULT_POINT, threshold),
            *(point(name, row["threshold"]) for name, row in zip(shares, rows) if row["threshold"] is not None))
