"""An embedded demo stream: no camera, no network, no files.

Frames are made at run time from scikit-image's ``astronaut`` photo (Eileen Collins,
NASA, public domain), animated like a live face (head sway, breathing scale, small
in-plane roll, slow lean in/out), in two panels side by side: LEFT the genuine photo,
RIGHT a self-blended copy of the same face (:mod:`stream_guard.synth.self_blend`, the
generator the detector's pseudo-fakes come from).
Both panels share one motion, so they differ only around the right-hand face.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from stream_guard.sources.base import OpensInWith
from stream_guard.synth.self_blend import FACE_PER_EYES, ClipBlend, blend_face
from stream_guard.types import FaceDetections, Frame, StreamInfo

# Face outline of the astronaut in the original 512x512 photo (x, y), measured by
# hand on a 5x enlargement with a 10 px grid: from the temples under the fringe, down
# the cheeks to the chin. It plays the role of a landmark hull.
ASTRONAUT_FACE_OUTLINE = np.array(
    [
        (186, 88), (200, 82), (222, 80), (245, 82), (258, 90), (262, 105), (262, 125),
        (259, 145), (254, 160), (246, 171), (234, 178), (222, 180), (209, 177),
        (197, 170), (189, 158), (184, 140), (182, 120), (183, 100),
    ],
    dtype=np.float32,
)
# MediaPipe-order keypoints, same photo: right eye, left eye, nose tip, mouth centre,
# right and left ear tragion (the subject's sides; the ears are under the hair: estimated).
ASTRONAUT_KEYPOINTS = np.array(
    [(203, 102), (246, 103), (224, 126), (222, 145), (179, 118), (266, 117)], dtype=np.float32
)
_FACE_CENTRE = (222.0, 130.0)  # rotation/scale centre in photo pixels
_FACE_SCALE_720P = 2.0  # photo -> frame scale at 720p: the ~100 px face becomes ~200 px
_BACKDROP_PX = 96  # smooth studio backdrop added above the photo, for upward head motion

# A subtle, fixed manipulation in the training generator's terms (sizes are fractions of
# the face width): a warmer, slightly enlarged and shifted face; a seam and a tone step
# that show when you look for them. The seed only changes the elastic shape of the mask.
DEMO_BLEND = ClipBlend(
    region="full",
    alter_source=True,
    rgb_shift=(6.0, 0.0, -5.0),
    hsv_shift=(3.0, 0.1, 0.0),
    contrast=1.05,
    brightness=0.02,
    freq="none",
    freq_amount=0.0,
    src_scale=(1.03, 1.03),
    src_shift=(0.012, -0.01),
    mask_scale=(1.0, 0.97),
    mask_angle=2.0,
    mask_shift=(0.0, 0.0),
    elastic_amp=0.02,
    elastic_seed=0,
    blur1=0.08,
    blur2=0.08,
    ratio=1.0,
)
_LABELS = ("original", "self-blended")


@dataclass(frozen=True, slots=True)
class DemoFaces:
    """The two prepared images (RGB uint8, photo plus ``_BACKDROP_PX`` backdrop rows on
    top) and the box ``(x0, y0, x1, y1)`` outside which they are identical."""

    genuine: np.ndarray
    blended: np.ndarray
    changed_box: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class _Motion:
    """Phases and rates of the head motion; drawn once from the seed."""

    phases: np.ndarray  # (8,) radians
    rates: np.ndarray  # (8,) Hz


class DemoSource(OpensInWith):
    """The embedded two-panel demo as a :class:`~stream_guard.sources.base.FrameSource`."""

    source_id = "demo"
    label_band_px = 32  # the panel labels sit in this band at the bottom of the frame

    def __init__(
        self,
        seconds: float = 20.0,
        fps: float = 30.0,
        width: int = 1280,
        height: int = 720,
        realtime: bool = False,
        seed: int = 0,
    ) -> None:
        if seconds <= 0 or fps <= 0:
            raise ValueError(f"seconds and fps must be positive, got {seconds}, {fps}")
        if width < 128 or height < 128:
            raise ValueError(f"demo frame must be at least 128x128, got {width}x{height}")
        self.seconds = float(seconds)
        self.fps = float(fps)
        self.width = int(width)
        self.height = int(height)
        self.realtime = bool(realtime)
        self.seed = int(seed)
        self.frame_count = max(1, int(round(self.seconds * self.fps)))
        self._panel_w = (self.width // 2, self.width - self.width // 2)
        self._motion = _draw_motion(np.random.default_rng(self.seed))
        self._faces: DemoFaces | None = None
        self._closed = False

    def open(self) -> StreamInfo:
        """Prepare the two face images (once) and describe the stream."""
        if self._faces is None:
            self._faces = build_demo_faces(self.seed)
        self._closed = False
        return StreamInfo(self.source_id, self.width, self.height, self.fps, self.frame_count, is_live=False)

    def frames(self) -> Iterator[Frame]:
        """Yield every frame; with ``realtime`` each waits for its time on the wall clock."""
        if self._faces is None:
            self.open()
        start = time.monotonic()
        for index in range(self.frame_count):
            if self._closed:
                return
            if self.realtime:
                _wait_until(start + index / self.fps)
            image = self.render(index)
            yield Frame(image, index, index / self.fps, time.monotonic(), self.source_id)

    def close(self) -> None:
        """Stop a running ``frames()`` loop after its current frame. Idempotent."""
        self._closed = True

    def render(self, index: int) -> np.ndarray:
        """Frame ``index`` as a new RGB uint8 array (a pure function of index and seed).

        The right panel reuses the left one and re-warps only the blended face's box,
        which nearly halves the per-frame cost.
        """
        if self._faces is None:
            self.open()
        faces = self._faces
        assert faces is not None
        left_w, right_w = self._panel_w
        frame = np.empty((self.height, self.width, 3), np.uint8)
        left = _warp(faces.genuine, self._image_to_panel(index, left_w), (left_w, self.height))
        frame[:, :left_w] = left
        right = frame[:, left_w:]
        m = self._image_to_panel(index, right_w)
        right[:] = left if right_w == left_w else _warp(faces.genuine, m, (right_w, self.height))
        x0, y0, x1, y1 = _bounding_box(m, faces.changed_box, (right_w, self.height))
        if x1 > x0 and y1 > y0:
            m[:, 2] -= (x0, y0)
            right[y0:y1, x0:x1] = _warp(faces.blended, m, (x1 - x0, y1 - y0))
        _draw_label(frame, 0, _LABELS[0], self.label_band_px)
        _draw_label(frame, left_w, _LABELS[1], self.label_band_px)
        return frame

    def ground_truth(self, index: int) -> FaceDetections:
        """Where the two faces are in frame ``index``: left (genuine) then right (blended).

        Boxes bound the face outline; keypoints follow MediaPipe's order. Handy for
        testing detectors and trackers against a known answer.
        """
        boxes, keypoints = [], []
        x = 0
        for panel_w in self._panel_w:
            m = self._photo_to_panel(index, panel_w)
            outline = _apply(m, ASTRONAUT_FACE_OUTLINE) + (x, 0)
            boxes.append([*outline.min(axis=0), *outline.max(axis=0)])
            keypoints.append(_apply(m, ASTRONAUT_KEYPOINTS) + (x, 0))
            x += panel_w
        return FaceDetections(
            boxes=np.asarray(boxes, np.float32),
            scores=np.ones(2, np.float32),
            keypoints=np.asarray(keypoints, np.float32),
        )

    def _image_to_panel(self, index: int, panel_w: int) -> np.ndarray:
        """Like ``_photo_to_panel`` for the prepared images (backdrop rows on top)."""
        m = self._photo_to_panel(index, panel_w)
        m[:, 2] -= m[:, 1] * _BACKDROP_PX
        return m

    def _photo_to_panel(self, index: int, panel_w: int) -> np.ndarray:
        """2x3 affine from photo pixels to panel pixels for frame ``index``."""
        t = index / self.fps
        dx, dy, scale, angle = _pose(self._motion, t)
        base = _FACE_SCALE_720P * min(self.height / 720.0, panel_w / 640.0)
        m = cv2.getRotationMatrix2D(_FACE_CENTRE, angle, base * scale)
        m[0, 2] += panel_w * (0.5 + dx) - _FACE_CENTRE[0]
        m[1, 2] += self.height * (0.38 + dy) - _FACE_CENTRE[1]
        return m


def build_demo_faces(seed: int = 0) -> DemoFaces:
    """The genuine astronaut photo and its self-blended copy, each with
    ``_BACKDROP_PX`` rows of smooth backdrop on top (``(512 + _BACKDROP_PX, 512, 3)``)."""
    from skimage.data import astronaut  # imported here: only the demo needs scikit-image

    photo = np.ascontiguousarray(astronaut())
    face_width = FACE_PER_EYES * float(np.linalg.norm(ASTRONAUT_KEYPOINTS[1] - ASTRONAUT_KEYPOINTS[0]))
    params = dataclasses.replace(DEMO_BLEND, elastic_seed=seed)
    blended, _ = blend_face(photo, ASTRONAUT_FACE_OUTLINE, face_width, params)
    genuine, blended = _with_backdrop(photo), _with_backdrop(blended)
    ys, xs = np.nonzero((genuine != blended).any(axis=2))
    if xs.size == 0:
        raise RuntimeError("the demo blend changed nothing")
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return DemoFaces(genuine, blended, box)


def _with_backdrop(photo: np.ndarray) -> np.ndarray:
    """Extend the photo upwards with its top rows, averaged and smoothed sideways,
    so a head moving down reveals plain backdrop rather than smeared streaks."""
    top = photo[:8].astype(np.float32).mean(axis=0, keepdims=True)
    top = cv2.GaussianBlur(top, (0, 0), sigmaX=12.0, sigmaY=0.1, borderType=cv2.BORDER_REFLECT_101)
    fade = np.linspace(1.0, 0.0, 24, dtype=np.float32)[:, None, None]  # feather the joint
    head = photo[:24].astype(np.float32) * (1.0 - fade) + top * fade
    rows = np.repeat(top, _BACKDROP_PX, axis=0)
    out = np.concatenate([rows, head, photo[24:].astype(np.float32)], axis=0)
    return np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def _draw_motion(rng: np.random.Generator) -> _Motion:
    # x sway, x fast, y sway, y fast, breathing, lean, roll, roll fast
    base = np.array([0.23, 0.61, 0.17, 0.53, 0.27, 0.045, 0.19, 0.47])
    return _Motion(phases=rng.uniform(0.0, 2 * math.pi, 8), rates=base * rng.uniform(0.85, 1.15, 8))


def _pose(motion: _Motion, t: float) -> tuple[float, float, float, float]:
    """Head offset (fractions of the panel), scale factor and roll (degrees) at ``t`` s."""
    s = np.sin(2 * math.pi * motion.rates * t + motion.phases)
    drift = math.sin(2 * math.pi * t / 29.0 + motion.phases[0])  # slow wander
    dx = 0.06 * s[0] + 0.015 * s[1] + 0.04 * drift
    dy = 0.025 * s[2] + 0.008 * s[3]
    scale = 1.0 + 0.02 * s[4] + 0.08 * s[5]
    angle = 3.0 * s[6] + 1.0 * s[7]
    return float(dx), float(dy), float(scale), float(angle)


def _warp(image: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _bounding_box(m: np.ndarray, box: tuple[int, int, int, int], limit: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer box, clipped to ``limit``, covering ``box`` mapped by ``m`` plus a
    2 px margin for the interpolation footprint."""
    x0, y0, x1, y1 = box
    corners = _apply(m, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64))
    lo = np.floor(corners.min(axis=0)).astype(int) - 2
    hi = np.ceil(corners.max(axis=0)).astype(int) + 2
    return max(0, lo[0]), max(0, lo[1]), min(limit[0], hi[0]), min(limit[1], hi[1])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _draw_label(frame: np.ndarray, x: int, text: str, band: int) -> None:
    """Small white text on a darkened patch in the panel's bottom-left corner."""
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    y1 = frame.shape[0] - (band - th - base) // 2
    patch = frame[y1 - th - base - 6 : y1, x + 8 : x + 8 + tw + 12]
    patch[:] = patch // 3
    cv2.putText(frame, text, (x + 14, y1 - base - 3), font, scale, (235, 235, 235), thick, cv2.LINE_AA)


def _wait_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)
