"""468-point face landmarks with MediaPipe's face mesh (``face_landmark.tflite``) run as ONNX.

The shipped ``models/face_landmark.onnx`` is converted from the mediapipe wheel's TFLite file by
``tools/convert_face_mesh.py``. The graph takes ``[1, 192, 192, 3]`` RGB in ``[0, 1]`` and returns
468 ``(x, y, z)`` points in crop pixels plus a face-presence logit.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from stream_guard.model.providers import create_session

MODEL_FILE = "face_landmark.onnx"  # in the shipped models folder
MESH_SIZE = 192
RIGHT_EYE_OUTER = 33  # subject's right eye outer corner (image left)
LEFT_EYE_OUTER = 263


def _rect_matrix(center: np.ndarray, size: float, angle: float) -> np.ndarray:
    """Affine image -> mesh-crop matrix: the square (center, size) rotated by ``angle``
    (radians, image y down) becomes an upright 192 x 192 crop."""
    cos, sin = math.cos(-angle), math.sin(-angle)
    scale = MESH_SIZE / size
    rot = np.array([[cos, -sin], [sin, cos]]) * scale
    shift = np.array([MESH_SIZE / 2.0, MESH_SIZE / 2.0]) - rot @ center
    return np.hstack([rot, shift[:, None]])


class FaceMesh:
    """Runs the face-mesh graph on a rotated square around a detected face."""

    def __init__(self, model_path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int = 1) -> None:
        self._sess = create_session(str(model_path), providers, threads)
        self._input = self._sess.get_inputs()[0].name

    def _run(self, image: np.ndarray, center: np.ndarray, size: float, angle: float) -> tuple[np.ndarray, float]:
        matrix = _rect_matrix(center, size, angle)
        crop = cv2.warpAffine(image, matrix, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        x = crop.astype(np.float32)[None] / 255.0
        points, flag = self._sess.run(None, {self._input: x})
        pts = points.reshape(468, 3).astype(np.float64)
        inverse = cv2.invertAffineTransform(matrix)
        xy = pts[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        score = 1.0 / (1.0 + math.exp(-float(np.clip(flag.reshape(-1)[0], -60, 60))))
        return xy.astype(np.float32), score

    @staticmethod
    def _roi_of(points: np.ndarray) -> tuple[np.ndarray, float, float]:
        """The mesh's square around landmarks: centred on their upright bounding box, 1.5x its
        larger side, turned by the line through the outer eye corners."""
        d = points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER]
        angle = math.atan2(float(d[1]), float(d[0]))
        cos, sin = math.cos(-angle), math.sin(-angle)
        upright = points @ np.array([[cos, sin], [-sin, cos]], dtype=np.float32)
        lo, hi = upright.min(0), upright.max(0)
        center = np.array([[cos, sin], [-sin, cos]]) @ ((lo + hi) / 2.0)
        return center, float(max(hi - lo)) * 1.5, angle

    def landmarks(self, image: np.ndarray, box: np.ndarray, keypoints: np.ndarray, refine: bool = True,
                  prior: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """468 ``(x, y)`` image points and a face-presence score for one detected face.

        The first pass uses the detector box (scaled 1.5) rotated by the eye line of
        the detector keypoints; ``refine`` re-runs on the square around the first landmarks.
        ``prior``: this face's landmarks predicted for this image (the last ones, moved with
        the face's box); one pass on the square around them replaces both, as MediaPipe's own
        tracking does, unless the face is lost there.
        """
        if prior is not None:
            pts, score = self._run(image, *self._roi_of(prior))
            if score > 0.5:
                return pts, score
        eye_r, eye_l = keypoints[0].astype(np.float64), keypoints[1].astype(np.float64)
        angle = math.atan2(eye_l[1] - eye_r[1], eye_l[0] - eye_r[0])
        center = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
        size = max(box[2] - box[0], box[3] - box[1]) * 1.5
        pts, score = self._run(image, center, size, angle)
        if refine and score > 0.5:
            pts2, score2 = self._run(image, *self._roi_of(pts))
            if score2 > 0.5:
                pts, score = pts2, score2
        return pts, score
