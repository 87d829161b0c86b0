"""Score-over-time plots and face thumbnails for the scan report (files, no display needed)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stream_guard.file_analysis import TrackSeries


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
