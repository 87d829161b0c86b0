"""A picture of an evaluation (``stream-guard evaluate --plot OUT.png``): the ROC curve of all files and of
each family that has both labels, with the threshold's operating point marked, beside where the real and
the fake files' scores fall against the threshold. Drawn from the report's ``files``, with the Agg canvas
(no display, no pyplot state)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from stream_guard.errors import ConfigError
from stream_guard.scoring import LABELS
from stream_guard.writable import write_with

REAL_COLOUR, FAKE_COLOUR = "#2e7d32", "#c62828"
PLOT_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg")  # by the file's suffix: a picture, or vector for a paper


def plot_format(path: str | Path) -> str:
    """The picture format ``path``'s suffix names; :class:`ConfigError` for one it cannot be."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise ConfigError(f"--plot {path}: name a .png, .svg, .pdf or .jpg file")
    return suffix


def _curve(ax, labels: np.ndarray, scores: np.ndarray, name: str, **style) -> None:
    fpr, tpr, _ = roc_curve(labels, scores)
    auc = roc_auc_score(labels, scores)
    ax.plot(fpr, tpr, label=f"{name}: AUC {auc:.2f} ({int((labels == 0).sum())} real, "
                            f"{int(labels.sum())} fake)", **style)


def plot_evaluation(report: dict, path: str | Path) -> Path:
    """Save the evaluation's picture at ``path``, in the format its suffix names (:func:`plot_format`);
    :class:`OutputError` if it cannot be written."""
    files = [f for f in report["files"] if f["score"] is not None]
    labels = np.array([LABELS[f["label"]] for f in files], int)
    scores = np.array([f["score"] for f in files], float)
    threshold = float(report["threshold"])
    fig = Figure(figsize=(11.0, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    roc, spread = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)

    roc.plot([0, 1], [0, 1], color="#9e9e9e", linestyle=":", linewidth=1.0)
    if labels.min(initial=1) == 0 and labels.max(initial=0) == 1:
        _curve(roc, labels, scores, "all files", color="#000000", linewidth=2.2)
        for family in sorted({f["family"] for f in files}):
            inside = np.array([f["family"] == family for f in files])
            if len(set(labels[inside])) == 2:
                _curve(roc, labels[inside], scores[inside], family, linewidth=1.0, alpha=0.8)
        fpr, tpr = float(np.mean(scores[labels == 0] >= threshold)), float(np.mean(scores[labels == 1] >= threshold))
        roc.plot([fpr], [tpr], marker="o", markersize=8, color=FAKE_COLOUR, linestyle="none",
                 label=f"threshold {threshold:.3f}: {fpr:.0%} of reals flagged, {tpr:.0%} of fakes caught")
        roc.legend(loc="lower right", fontsize=7, framealpha=0.9)
    else:
        roc.text(0.5, 0.5, "no ROC curve: the files need both labels", ha="center", va="center")
    roc.set_xlim(-0.01, 1.01)
    roc.set_ylim(-0.01, 1.01)
    roc.set_xlabel("real files called fake (false-positive rate)")
    roc.set_ylabel("fake files called fake (true-positive rate)")
    roc.set_title("ROC, per file", fontsize=10)
    roc.grid(True, alpha=0.3)

    rng = np.random.default_rng(0)  # jitter only spreads the dots; it is the same on every run
    for value, name, colour in ((0, "real", REAL_COLOUR), (1, "fake", FAKE_COLOUR)):
        chosen = scores[labels == value]
        spread.scatter(chosen, value + rng.uniform(-0.25, 0.25, len(chosen)), s=14, color=colour, alpha=0.7,
                       label=f"{name} ({len(chosen)})")
    spread.axvline(threshold, color="#d62728", linestyle="--", linewidth=1.0, label=f"threshold {threshold:.3f}")
    spread.set_yticks([0, 1], ["real", "fake"])
    spread.set_xlim(-0.02, 1.02)
    spread.set_ylim(-0.6, 1.6)
    spread.set_xlabel("file score (P(fake))")
    spread.set_title("where each file's score falls", fontsize=10)
    spread.grid(True, axis="x", alpha=0.3)
    spread.legend(loc="upper left", fontsize=7, framealpha=0.9)

    model = report.get("model", "?")
    fig.suptitle(f"{report.get('manifest', '')}: model {model} {report.get('model_version', '')}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    write_with(path, lambda p: fig.savefig(p, format=plot_format(p)), "--plot")
    return path
