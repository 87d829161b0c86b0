"""Crop jitter and augmentation applied identically to a real clip and its pseudo-fake.

One :class:`Aug` is drawn per clip pair and applied to every frame of both, so the
only difference the network can learn is the blend. Re-compression goes through
JPEG (cv2) or H.264 (PyAV libx264, the whole sequence as one little video).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, replace

import cv2
import numpy as np

try:
    import av
except ImportError:  # a lent training machine may lack PyAV (its wheel is too large to carry there)
    av = None

H264_AVAILABLE = av is not None

from stream_guard.faces.crop import crop_face, crop_matrix, transform_points


@dataclass(frozen=True)
class CropJitter:
    """Per-clip deviation from the pipeline's crop: margin and centre shift (box widths)."""

    margin: float
    dx: float
    dy: float


def sample_crop(rng: np.random.Generator, margin: float, amount: float = 1.0) -> CropJitter:
    return CropJitter(
        margin=float(margin + amount * rng.uniform(-0.05, 0.08)),
        dx=float(amount * rng.uniform(-0.04, 0.04)),
        dy=float(amount * rng.uniform(-0.04, 0.04)),
    )


def crop_with_jitter(frame: np.ndarray, box: np.ndarray, lms: np.ndarray, size: int,
                     jit: CropJitter) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline crop (:func:`crop_face`) of a cached frame, shifted by ``jit``;
    returns the crop and the landmarks in its pixels."""
    w = max(box[2] - box[0], box[3] - box[1])
    b = box + np.array([jit.dx, jit.dy, jit.dx, jit.dy], np.float32) * w
    matrix = crop_matrix(b, size, jit.margin)
    return crop_face(frame, b, size, jit.margin), transform_points(lms, matrix)


@dataclass(frozen=True)
class Aug:
    """Augmentation for one clip pair."""

    flip: bool
    gray: bool
    gamma: float
    contrast: float
    brightness: float
    saturation: float
    hue: float
    down: float  # resolution loss factor (1 = none)
    blur: float  # gaussian sigma in pixels (0 = none)
    noise: float  # gaussian sigma in 0..255 units
    codec: str  # "none" | "jpeg" | "h264"
    quality: int  # JPEG quality or x264 CRF
    cut: float = 1.0  # side of the centred square kept, share of the crop; beyond it the edge repeats (1 = none)


def sample_aug(rng: np.random.Generator, strength: float = 1.0) -> Aug:
    """Heavy, broad augmentation; ``strength`` 0 turns it off (except codec choice)."""
    u, r = rng.uniform, rng.random
    s = strength
    codec = str(rng.choice(["none", "jpeg", "h264"], p=[0.25, 0.35, 0.40])) if s > 0 else "none"
    return Aug(
        flip=bool(r() < 0.5),
        gray=bool(r() < 0.04 * s),
        gamma=float(np.exp(u(-0.25, 0.25) * s)),
        contrast=float(1 + u(-0.2, 0.2) * s),
        brightness=float(u(-0.1, 0.1) * s),
        saturation=float(1 + u(-0.3, 0.3) * s),
        hue=float(u(-6, 6) * s),
        down=float(u(0.35, 0.9)) if r() < 0.35 * s else 1.0,
        blur=float(u(0.3, 1.4)) if r() < 0.25 * s else 0.0,
        noise=float(u(1, 5)) if r() < 0.2 * s else 0.0,
        codec=codec,
        quality=int(rng.integers(35, 96)) if codec == "jpeg" else int(rng.integers(18, 35)),
    )


# Small, re-encoded faces: the dev DeepFaceLive demos show faces of about 80-110 px in 400x280 side-by-side
# videos. A 224 px crop at margin 0.25 holds a face of about 150 px, so 0.4-0.7 brings it to 60-105 px.
SMALL_FACE_DOWN = (0.4, 0.7)
SMALL_FACE_CRF = (23, 35)


def small_face_aug(a: Aug, rng: np.random.Generator) -> Aug:
    """``a`` with the resolution loss and H.264 re-compression of a small face in a re-encoded video
    (always both; the rest of ``a`` unchanged)."""
    return replace(a, down=float(rng.uniform(*SMALL_FACE_DOWN)), codec="h264",
                   quality=int(rng.integers(SMALL_FACE_CRF[0], SMALL_FACE_CRF[1] + 1)))


# Tight face crops (face-crop datasets, moderation queues): the frame cut to 1-1.35 times the face box. In a
# crop at margin m the box is 1 / (1 + 2m) of the side; the pipeline then repeats the cut frame's edge beyond it.
TIGHT_FACE_BOX_SCALE = (1.0, 1.35)


def tight_face_aug(a: Aug, rng: np.random.Generator, margin: float) -> Aug:
    """``a`` with the crop cut down to its face, as a frame cut to 1-1.35 times the face box and then
    cropped by the pipeline at ``margin`` looks (the rest of ``a`` unchanged)."""
    return replace(a, cut=float(rng.uniform(*TIGHT_FACE_BOX_SCALE)) / (1.0 + 2.0 * margin))


def cut_to_centre(img: np.ndarray, cut: float) -> np.ndarray:
    """``img`` with only its centred square of side ``cut`` (share of the side) kept, the edge repeated beyond."""
    if cut >= 1.0:
        return img
    h, w = img.shape[:2]
    top, left = int(round(h * (1.0 - cut) / 2)), int(round(w * (1.0 - cut) / 2))
    inner = img[top:h - top, left:w - left]
    return cv2.copyMakeBorder(inner, top, h - top - inner.shape[0], left, w - left - inner.shape[1],
                              cv2.BORDER_REPLICATE)


def _colour(img: np.ndarray, a: Aug, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    x = np.power(np.clip(x, 0, 1), a.gamma)
    x = (x - 0.5) * a.contrast + 0.5 + a.brightness
    x = np.clip(x, 0, 1)
    if a.gray:
        g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
        x = np.repeat(g[..., None], 3, axis=2)
    elif a.saturation != 1.0 or a.hue != 0.0:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0] + a.hue) % 360.0
        hsv[..., 1] = np.clip(hsv[..., 1] * a.saturation, 0, 1)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    h, w = x.shape[:2]
    if a.down < 1.0:
        small = cv2.resize(x, (max(16, int(w * a.down)), max(16, int(h * a.down))), interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if a.blur > 0:
        x = cv2.GaussianBlur(x, (0, 0), a.blur)
    x = x * 255.0
    if a.noise > 0:
        x = x + rng.normal(0, a.noise, x.shape).astype(np.float32)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def crf_as_jpeg_quality(crf: int) -> int:
    """A JPEG quality of roughly the loss of x264 ``crf`` 18-35 (95-41), for machines without PyAV."""
    return int(round(95 - (crf - 18) * 3.2))


def h264(frames: list[np.ndarray], crf: int) -> list[np.ndarray]:
    """Encode frames as one H.264 stream (yuv420p, libx264 ultrafast) and decode them back."""
    h, w = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast", "tune": "zerolatency"}
        stream.thread_count = 1
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    buf.seek(0)
    decoded = []
    with av.open(buf, "r", format="h264") as inp:
        inp.streams.video[0].thread_count = 1
        for frame in inp.decode(video=0):
            decoded.append(frame.to_ndarray(format="rgb24"))
    if len(decoded) != len(frames):  # never expected; keep lengths aligned
        decoded = (decoded + frames[len(decoded):])[: len(frames)]
    return decoded


def apply_aug(frames: list[np.ndarray], a: Aug, seed: int) -> list[np.ndarray]:
    """Apply one clip's augmentation to its frames (noise from ``seed``: same for real and fake)."""
    rng = np.random.default_rng(seed)
    out = [_colour(f, a, rng) for f in frames]
    if a.codec == "jpeg":
        out = [jpeg(f, a.quality) for f in out]
    elif a.codec == "h264" and H264_AVAILABLE:
        out = h264(out, a.quality)
    elif a.codec == "h264":
        out = [jpeg(f, crf_as_jpeg_quality(a.quality)) for f in out]
    if a.flip:
        out = [np.ascontiguousarray(f[:, ::-1]) for f in out]
    if a.cut < 1.0:  # after the codec: the pipeline repeats the edge of the decoded cut frame
        out = [cut_to_centre(f, a.cut) for f in out]
    return out
