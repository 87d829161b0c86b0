"""Face-region masks from the 468 face-mesh landmarks, for models that compare regions of a face.

One set of masks per face crop and feature-map size, in the model contract's
:data:`~stream_guard.model.contract.REGION_NAMES` order:

* ``core``: the face inside the seam band, without mouth and eyes;
* ``seam_in`` / ``seam_out``: bands :data:`SEAM_WIDTH` of the map wide just inside and just
  outside the face-oval hull (where a swap or a self-blend joins two faces);
* ``mouth`` and ``eyes``: the outer-lip and eye polygons.

The masks are drawn at each size a model's maps have (a 224 px crop's maps are 224, 112, 56 and
28 px), so a region has hard edges at every scale. Training (``tools/sbi``) and the pipeline
both build masks here, so a model sees the same regions in both.
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
SEAM_WIDTH = 0.05  # each seam band's width, as a share of the map's side


def region_masks(landmarks: np.ndarray, crop_size: int, res: int) -> np.ndarray:
    """0/1 masks ``float32 [5, res, res]`` (:data:`REGION_NAMES` order) drawn at ``res`` pixels for a
    ``crop_size``-pixel crop, from its 468 landmarks ``[468, 2+]`` in crop pixels. Each seam band
    is :data:`SEAM_WIDTH` of ``res`` wide (at least one pixel)."""
    scale = res / crop_size

    def polygon(idx: tuple[int, ...], convex: bool = False) -> np.ndarray:
        mask = np.zeros((res, res), np.uint8)
        pts = np.round(landmarks[list(idx), :2] * scale).astype(np.int32)
        if convex:
            cv2.fillConvexPoly(mask, cv2.convexHull(pts), 1)
        else:
            cv2.fillPoly(mask, [pts], 1)
        return mask

    hull = polygon(FACE_OVAL, convex=True)
    w = max(1, int(round(res * SEAM_WIDTH)))
    kernel = np.ones((2 * w + 1, 2 * w + 1), np.uint8)
    inside, outside = cv2.erode(hull, kernel), cv2.dilate(hull, kernel)
    mouth, eyes = polygon(LIPS), polygon(LEFT_EYE) | polygon(RIGHT_EYE)
    masks = (inside & (1 - (mouth | eyes)), hull - inside, outside - hull, mouth, eyes)
    return np.stack(masks).astype(np.float32)


def moved_with_box(points: np.ndarray, old_box: np.ndarray, new_box: np.ndarray) -> np.ndarray:
    """``points`` found in ``old_box`` carried along to ``new_box`` (the boxes' centre shift and size ratio)."""
    def centre_size(b: np.ndarray) -> tuple[np.ndarray, float]:
        return np.array([(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0]), float(max(b[2] - b[0], b[3] - b[1], 1e-3))

    (c0, s0), (c1, s1) = centre_size(old_box), centre_size(new_box)
    return ((points - c0) * (s1 / s0) + c1).astype(np.float32)


# A face's last landmarks (image pixels) and the box they were found in: what the mesh tracks from.
MeshTrack = tuple[np.ndarray, np.ndarray]


class FaceRegions:
    """The region masks a model takes for a face's crop: ``names`` (a subset of
    :data:`REGION_NAMES`, in the model's order) drawn at each of ``sizes``. The face mesh runs on
    the full frame around the tracked face; its landmarks move into the crop's pixels."""

    def __init__(self, mesh: FaceMesh, names: tuple[str, ...], sizes: tuple[int, ...], crop_size: int,
                 margin: float) -> None:
        self.mesh, self.sizes, self.crop_size, self.margin = mesh, sizes, crop_size, margin
        self._index = [REGION_NAMES.index(n) for n in names]

    def __call__(self, image: np.ndarray, box: np.ndarray, keypoints: np.ndarray,
                 previous: MeshTrack | None = None) -> tuple[list[np.ndarray], MeshTrack]:
        """Masks ``float32 [len(names), s, s]`` for each size ``s``, for the crop of ``box`` (as
        :func:`~stream_guard.faces.crop.crop_face` cuts it), and what to pass as ``previous`` next
        time for this face: from there the mesh needs one pass instead of two."""
        lms, track = self.crop_landmarks(image, box, keypoints, previous)
        return self.masks(lms), track

    def crop_landmarks(self, image: np.ndarray, box: np.ndarray, keypoints: np.ndarray,
                       previous: MeshTrack | None = None) -> tuple[np.ndarray, MeshTrack]:
        """The face's 468 landmarks in the pixels of its crop, and what to pass as ``previous`` next time."""
        prior = None if previous is None else moved_with_box(previous[0], previous[1], box)
        points, _ = self.mesh.landmarks(image, box, keypoints, prior=prior)
        lms = transform_points(points, crop_matrix(box, self.crop_size, self.margin))
        return lms, (points, np.asarray(box, np.float32).copy())

    def masks(self, crop_landmarks: np.ndarray) -> list[np.ndarray]:
        """The model's masks (see :meth:`__call__`) from landmarks in crop pixels."""
        return [region_masks(crop_landmarks, self.crop_size, s)[self._index] for s in self.sizes]
