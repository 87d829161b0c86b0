"""Score-over-time plots and face thumbnails for the scan report (files, no display needed)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from stream_guard.file_analysis import TrackSeries
from stream_guard.model.occlusion import OcclusionMap

REGION_LABELS = {"core": "face core", "seam_in": "inner seam", "seam_out": "outer seam", "mouth": "mouth",
                 "eyes": "eyes", "background": "background"}


def plot_track(series: TrackSeries, threshold: float, path: Path, title: str = "") -> Path:
    """Save a PNG of one face track's window scores (and the smoothed score) over time,
    with the fake threshold as a dashed line. Uses the Agg canvas directly (no pyplot state)."""
    fig = Figure(figsize=(6.4, 2.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    times = np.asarray(series.times_s, float)
    ax.plot(times, series.scores, marker="o", markersize=3, linewidth=1.2, color="#1f77b4", label="window score")
    if series.smoothed:
        ax.plot(times, series.smoothed, linewidth=1.0, color="#7f7f7f", alpha=0.8, label="smoothed")
    ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=1.0, label=f"threshold {threshold:.2f}")
    ax.set_ylim(-0.02, 1.02)
    if len(times) == 1:
        ax.set_xlim(times[0] - 0.5, times[0] + 0.5)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("P(fake)")
    ax.set_title(title or f"face #{series.track_id}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def save_thumbnail(crop_rgb: np.ndarray, path: Path, quality: int = 90) -> Path:
    """Save an RGB face crop as JPEG (or PNG, by suffix)."""
    bgr = cv2.cvtColor(np.ascontiguousarray(crop_rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), bgr, params):
        raise OSError(f"cannot write {path}")
    return path


def plot_occlusion(explanation: OcclusionMap, path: Path, title: str = "") -> Path:
    """Save a PNG of an occlusion map: the window's last crop under the grid's weights (red: hiding that
    part lowers the fake score; blue: raises it), beside each named region's weight with its score hidden."""
    fig = Figure(figsize=(7.2, 3.0), dpi=100)
    FigureCanvasAgg(fig)
    weights = explanation.grid_weights
    limit = max(1.0, float(np.abs(weights).max()))
    size = explanation.crop.shape[0]
    heat = cv2.resize(weights.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    shown = ScalarMappable(Normalize(-limit, limit), colormaps["RdBu_r"])
    overlay = shown.to_rgba(heat)
    overlay[..., 3] = 0.7 * np.clip(np.abs(heat) / limit, 0.0, 1.0)  # parts that do not matter stay clear
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(explanation.crop)
    ax.imshow(overlay)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"window score {explanation.score:.2f}", fontsize=9)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
    bars = fig.add_subplot(1, 2, 2)
    names = list(explanation.regions)[::-1]
    values = [float(explanation.weight(explanation.regions[n])) for n in names]
    bars.barh(range(len(names)), values, color=["#c62828" if v > 0 else "#1565c0" for v in values])
    bars.set_yticks(range(len(names)),
                    [f"{REGION_LABELS.get(n, n)} ({explanation.regions[n]:.2f})" for n in names], fontsize=8)
    bars.axvline(0, color="#444", linewidth=0.8)
    bars.set_xlabel("weight (log-odds); score with it hidden in brackets", fontsize=8)
    bars.tick_params(axis="x", labelsize=7)
    fig.suptitle(title or "what the score rests on", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
