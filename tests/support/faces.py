"""Synthetic face videos for tests, made from scikit-image's public-domain astronaut photo."""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from skimage import data

from tests.support.synth_video import DrawFn


# Hand-annotated on skimage.data.astronaut() (512 x 512): the face box, in that image's pixels.
ASTRO_FACE = np.array([176.0, 72.0, 278.0, 176.0])


def tight_face_crop(size: int = 224) -> tuple[np.ndarray, tuple[int, int], float]:
    """A dataset's tight face crop of the astronaut, ``size`` px, cutting into the forehead and chin: too large
    for the full-range detector's whole-frame pass. Also the crop's top-left corner in the photo and its scale."""
    side = ASTRO_FACE[2] - ASTRO_FACE[0]
    x1, y1, x2, y2 = (ASTRO_FACE + np.array([1, 1, -1, -1]) * 0.08 * side).astype(int)
    crop = cv2.resize(np.ascontiguousarray(data.astronaut()[y1:y2, x1:x2]), (size, size),
                      interpolation=cv2.INTER_AREA)
    return crop, (x1, y1), size / (x2 - x1)


@lru_cache(maxsize=1)
def astronaut_head() -> np.ndarray:
    """The astronaut's head and shoulders (RGB), as a detector would see a person."""
    return np.ascontiguousarray(data.astronaut()[0:300, 110:370])


def paste(canvas: np.ndarray, image: np.ndarray, centre: tuple[float, float], height: int) -> None:
    """Paste ``image`` scaled to ``height`` px, centred at ``centre`` (clipped at the borders)."""
    h, w = image.shape[:2]
    width = max(1, int(round(w * height / h)))
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    x0, y0 = int(round(centre[0] - width / 2)), int(round(centre[1] - height / 2))
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(canvas.shape[1], x0 + width), min(canvas.shape[0], y0 + height)
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] = small[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]


def two_faces_passing(width: int = 640, height: int = 360, n_frames: int = 90, face_px: int = 150) -> DrawFn:
    """Two heads sliding past each other in opposite directions (upper one left->right,
    lower one right->left), never overlapping: each must keep its own track id."""
    head = astronaut_head()
    mirrored = np.ascontiguousarray(head[:, ::-1])
    background = np.full((height, width, 3), 90, np.uint8)
    margin = face_px * 0.5

    def draw(i: int) -> np.ndarray:
        t = i / max(1, n_frames - 1)
        frame = background.copy()
        paste(frame, head, (margin + t * (width - 2 * margin), height * 0.27), face_px)
        paste(frame, mirrored, (width - margin - t * (width - 2 * margin), height * 0.73), face_px)
        return frame

    return draw


def one_face_moving(width: int = 1280, height: int = 720, face_px: int = 260, period: int = 90) -> DrawFn:
    """One head drifting on a slow ellipse, like a person in front of a camera."""
    head = astronaut_head()
    background = np.full((height, width, 3), 70, np.uint8)

    def draw(i: int) -> np.ndarray:
        a = 2 * np.pi * i / period
        frame = background.copy()
        paste(frame, head, (width / 2 + width * 0.15 * np.cos(a), height / 2 + height * 0.08 * np.sin(a)), face_px)
        return frame

    return draw
