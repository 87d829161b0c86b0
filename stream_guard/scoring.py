"""Detection-quality figures shared by ``stream-guard evaluate`` and the training tools:
file families, AUC / EER / accuracy, false-alarm thresholds. Needs no video stack."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def family_of(file_name: str) -> str:
    """``dfl_Keanu_Reeves_0_L.mp4`` -> ``dfl``; ``images/meso_x.jpg`` -> ``meso``."""
    return Path(file_name).name.split("_", 1)[0].split(".", 1)[0]


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate: where the false-positive rate meets the false-negative rate."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def metrics(labels: list[int], scores: list[float], threshold: float) -> dict:
    """AUC, EER and accuracy at ``threshold``; AUC and EER are null unless both labels are present."""
    y, s = np.asarray(labels), np.asarray(scores, float)
    both = len(set(labels)) == 2
    return {
        "auc": float(roc_auc_score(y, s)) if both else None,
        "eer": eer(y, s) if both else None,
        "accuracy": float(np.mean((s >= threshold) == (y == 1))) if len(y) else None,
        "n_real": int(np.sum(y == 0)),
        "n_fake": int(np.sum(y == 1)),
    }


def metrics_by_family(labels: list[int], scores: list[float], families: list[str], threshold: float,
                      names: list[str] | None = None) -> dict[str, dict]:
    """:func:`metrics` per family (``names``: every family to report, default those present)."""
    return {
        name: metrics([y for y, f in zip(labels, families) if f == name],
                      [s for s, f in zip(scores, families) if f == name], threshold)
        for name in (names if names is not None else sorted(set(families)))
    }


FALSE_ALARM_TARGETS = (0.01, 0.05, 0.10)


def false_alarm_thresholds(labels: list[int], scores: list[float],
                           targets: tuple[float, ...] = FALSE_ALARM_TARGETS) -> list[dict]:
    """Per target rate: the lowest threshold (to 3 decimals) at which at most that share of the
    real files score at or above it, with the shares of reals and fakes it flags. Empty
    without real files; ``threshold`` is None where even 1.0 would flag too many."""
    y, s = np.asarray(labels), np.asarray(scores, float)
    reals, fakes = np.sort(s[y == 0])[::-1], s[y == 1]
    out = []
    for target in targets if len(reals) else ():
        allowed = int(math.floor(target * len(reals) + 1e-9))  # reals that may score at or above it
        milli = max(int(math.floor(reals[allowed] * 1000)), 0)  # reals[allowed] must stay below
        while milli <= 1000 and np.sum(reals >= milli / 1000) > allowed:
            milli += 1
        threshold, ok = milli / 1000, milli <= 1000
        out.append({"target": target, "threshold": round(threshold, 3) if ok else None,
                    "reals_flagged": float(np.mean(reals >= threshold)) if ok else None,
                    "fakes_caught": float(np.mean(fakes >= threshold)) if ok and len(fakes) else None})
    return out
