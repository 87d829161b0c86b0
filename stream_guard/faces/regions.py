"""Face-region masks from the 468 face-mesh landmarks, for models that compare regions of a face.

One set of masks per face crop, at the crop's resolution, in the model contract's
:data:`~stream_guard.model.contract.REGION_NAMES` order:

* ``core``: the face inside the seam band, without mouth and eyes;
* ``seam_in`` / ``seam_out``: bands :data:`SEAM_WIDTH` of the crop wide just inside and just
  outside the face-oval hull (where a swap or a self-blend joins two faces);
* ``mouth`` and ``eyes``: the outer-lip and eye polygons.

Training (``tools/sbi``) and the pipeline both build masks here, so a model sees the same
regions in both.
"""
from __future__ import annotations

import cv2
import numpy as np

from stream_guard.faces.crop import crop_matrix, transform_points
from stream_guard.faces.landmarks import FaceMesh
from stream_guard.model.contract import REGION_NAMES

# MediaPipe face-mesh indices: the face oval, the outer lip line and each eye's outline.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
SEAM_WIDTH = 0.05  # each seam band's width, as a share of the crop's side


def _polygon(landmarks: np.ndarray, idx: tuple[int, ...], size: int, convex: bool = False) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    pts = np.round(landmarks[list(idx), :2]).astype(np.int32)
    if convex:
        cv2.fillConvexPoly(mask, cv2.convexHull(pts), 1)
    else:
        cv2.fillPoly(mask, [pts], 1)
    return mask


def region_masks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """0/1 masks ``float32 [5, size, size]`` (:data:`REGION_NAMES` order) of a ``size``-pixel
    crop, from its 468 landmarks ``[468, 2+]`` in crop pixels."""
    hull = _polygon(landmarks, FACE_OVAL, size, convex=True)
    w = max(1, int(round(size * SEAM_WIDTH)))
    kernel = np.ones((2 * w + 1, 2 * w + 1), np.uint8)
    inside, outside = cv2.erode(hull, kernel), cv2.dilate(hull, kernel)
    mouth = _polygon(landmarks, LIPS, size)
    eyes = _polygon(landmarks, LEFT_EYE, size) | _polygon(landmarks, RIGHT_EYE, size)
    masks = (inside & (1 - (mouth | eyes)), hull - inside, outside - hull, mouth, eyes)
    return np.stack(masks).astype(np.float32)


class FaceRegions:
    """The region masks a model takes (``names``, a subset of :data:`REGION_NAMES` in the model's
    order) for a face's crop: the face mesh runs on the full frame around the tracked face, its
    landmarks move into the crop's pixels and become masks at the crop's resolution."""

    def __init__(self, mesh: FaceMesh, names: tuple[str, ...], size: int, margin: float) -> None:
        self.mesh, self.size, self.margin = mesh, size, margin
        self._index = [REGION_NAMES.index(n) for n in names]

    def __call__(self, image: np.ndarray, box: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """Masks ``float32 [len(names), size, size]`` for the crop of ``box`` (as :func:`crop_face` cuts it)."""
        points, _ = self.mesh.landmarks(image, box, keypoints)
        return region_masks(transform_points(points, crop_matrix(box, self.size, self.margin)), self.size)[self._index]
