"""Square face crops: the one crop geometry shared by the pipeline and training.

The crop is centred on the detector box, its side is ``max(w, h) * (1 + 2 * margin)``,
it is resized to ``size`` pixels in one ``cv2.warpAffine`` and pixels outside the
image repeat the border.
"""
from __future__ import annotations

import cv2
import numpy as np


def crop_matrix(box: np.ndarray, size: int, margin: float) -> np.ndarray:
    """2x3 affine matrix mapping image pixel indices to crop pixel indices.

    ``box`` is ``[x1, y1, x2, y2]`` in continuous image coordinates (pixel edges on
    integers). Apply it to points with :func:`transform_points`.
    """
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    side = max(x2 - x1, y2 - y1, 1e-3) * (1.0 + 2.0 * margin)
    scale = size / side
    left = 0.5 * (x1 + x2) - 0.5 * side
    top = 0.5 * (y1 + y2) - 0.5 * side
    # continuous: v = scale * (u - origin); pixel index = continuous - 0.5
    return np.array(
        [[scale, 0.0, scale * (0.5 - left) - 0.5], [0.0, scale, scale * (0.5 - top) - 0.5]],
        dtype=np.float64,
    )


def crop_face(image: np.ndarray, box: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Square ``size x size`` crop of ``image`` around ``box`` (see module docstring)."""
    matrix = crop_matrix(box, size, margin)
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine ``matrix`` to points ``(..., 2)`` (pixel indices), keeping extra columns."""
    pts = np.asarray(points, dtype=np.float64)
    xy = pts[..., :2] @ matrix[:, :2].T + matrix[:, 2]
    if pts.shape[-1] == 2:
        return xy.astype(np.float32)
    return np.concatenate([xy, pts[..., 2:]], axis=-1).astype(np.float32)


def share_beyond_frame(box: np.ndarray, width: int, height: int) -> float:
    """How much of ``box`` lies beyond one edge of a ``width x height`` frame, as a share of the
    box's side across that edge: the largest of the four (0 for a box inside the frame). The
    detector keeps a face's whole box when part of the face has left the frame."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    w, h = max(x2 - x1, 1e-6), max(y2 - y1, 1e-6)
    return max(0.0, -x1 / w, (x2 - width) / w, -y1 / h, (y2 - height) / h)
