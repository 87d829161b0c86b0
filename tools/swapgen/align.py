"""Faces aligned to a mean face-mesh shape: the frame the swap autoencoder reads and draws in."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from tools.sbi.swap_blend import SHAPE_POINTS

RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263  # face-mesh indices, used to level the shapes


def levelled_shape(landmarks: np.ndarray) -> np.ndarray:
    """468 landmarks centred, rotated so the outer eye corners are level, scaled to unit RMS radius."""
    p = np.asarray(landmarks, np.float64)[:, :2]
    p = p - p.mean(0)
    v = p[LEFT_EYE_OUTER] - p[RIGHT_EYE_OUTER]
    a = -np.arctan2(v[1], v[0])
    c, s = np.cos(a), np.sin(a)
    p = p @ np.array([[c, s], [-s, c]])
    return p / (np.sqrt((p ** 2).sum(1).mean()) + 1e-9)


def mean_shape_template(landmark_sets: Sequence[np.ndarray], size: int) -> np.ndarray:
    """The mean levelled shape of ``landmark_sets``, placed in a ``size`` px square: the face's
    extent fills 78 % of it, shifted 2 % down so the chin has room. ``[468, 2]`` float64."""
    shape = np.mean([levelled_shape(lms) for lms in landmark_sets], 0)
    lo, hi = shape.min(0), shape.max(0)
    shape = (shape - (lo + hi) / 2) / (hi - lo).max()
    return (shape * 0.78 + 0.5) * size + np.array([0.0, 0.02 * size])


def align_matrix(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """2x3 similarity transform taking an image's ``landmarks`` onto ``template``."""
    m, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32)[SHAPE_POINTS, :2],
                                       np.asarray(template, np.float32)[SHAPE_POINTS], method=cv2.LMEDS)
    if m is None:
        raise ValueError("landmarks admit no similarity transform onto the template")
    return m


def warp_to_template(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``image`` through :func:`align_matrix`'s ``matrix`` into the template's ``size`` px frame."""
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def aligned_face(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """``image``'s face warped into the template's ``size`` px frame (uint8 RGB)."""
    return warp_to_template(image, align_matrix(landmarks, template), size)


def face_weight(template: np.ndarray, size: int) -> np.ndarray:
    """Per-pixel loss weight: 2.5 inside the template's face hull, 0.5 outside, softly edged."""
    hull = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(template).astype(np.int32)), 1.0)
    return cv2.GaussianBlur(hull, (0, 0), size / 32) * 2.0 + 0.5
