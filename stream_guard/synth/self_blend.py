"""Self-blended images (SBI): a real face blended onto a slightly altered copy of itself.

Written from the description in Shiohara & Yamasaki, "Detecting Deepfakes with
Self-Blended Images", CVPR 2022:

* source-target generator: one of two copies of the face gets colour (RGB shift,
  hue/saturation/value, brightness/contrast) and frequency (down-up-scaling or
  sharpening) alterations; the source is then slightly resized and translated;
* mask generator: the convex hull of the face landmarks (sometimes of a part of the
  face), deformed (affine + elastic), blurred, cut below 1 (an erosion), blurred
  again, scaled by a blend ratio;
* blend: ``fake = source * mask + target * (1 - mask)``.

For video clips :func:`sample_clip_blend` draws one set of parameters per clip and
:func:`blend_frame` applies it per frame with small jitter, so the seam moves with the
face the way a face swap's does. :func:`blend_frame` takes MediaPipe's 468 face-mesh
landmarks (training, ``tools/sbi``); :func:`blend_face` takes any face outline and a
face width (the embedded demo, which has a hand-measured outline and no mesh).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

RIGHT_EYE, LEFT_EYE, NOSE_TIP, UPPER_LIP, LOWER_LIP = 33, 263, 1, 13, 14
REGIONS = ("full", "inner", "lower", "upper", "half_left", "half_right", "mouth_nose")
REGION_P = (0.50, 0.16, 0.10, 0.08, 0.05, 0.05, 0.06)
FACE_PER_EYES = 1.5  # face width / outer eye-corner distance


@dataclass(frozen=True)
class ClipBlend:
    """Blend parameters shared by every frame of one clip (sizes relative to face width)."""

    region: str
    alter_source: bool  # alter the source (pasted) copy, else the target
    rgb_shift: tuple[float, float, float]  # per channel, 0-255 units
    hsv_shift: tuple[float, float, float]  # hue degrees, saturation and value scale - 1
    contrast: float
    brightness: float
    freq: str  # "none" | "down" | "sharpen"
    freq_amount: float
    src_scale: tuple[float, float]
    src_shift: tuple[float, float]
    mask_scale: tuple[float, float]
    mask_angle: float
    mask_shift: tuple[float, float]
    elastic_amp: float
    elastic_seed: int
    blur1: float
    blur2: float
    ratio: float


def sample_clip_blend(rng: np.random.Generator) -> ClipBlend:
    """Draw one clip's blend parameters."""
    u = rng.uniform
    freq = str(rng.choice(["none", "down", "sharpen"], p=[0.3, 0.45, 0.25]))
    return ClipBlend(
        region=str(rng.choice(REGIONS, p=REGION_P)),
        alter_source=bool(rng.random() < 0.5),
        rgb_shift=tuple(float(v) for v in u(-12, 12, 3) * (rng.random() < 0.7)),
        hsv_shift=(float(u(-4, 4)), float(u(-0.15, 0.15)), float(u(-0.1, 0.1))),
        contrast=float(u(0.9, 1.1)),
        brightness=float(u(-0.06, 0.06)),
        freq=freq,
        freq_amount=float(u(0.3, 0.7) if freq == "down" else u(0.3, 1.0)),
        src_scale=(float(u(0.95, 1.05)), float(u(0.95, 1.05))),
        src_shift=(float(u(-0.02, 0.02)), float(u(-0.02, 0.02))),
        mask_scale=(float(u(0.92, 1.06)), float(u(0.92, 1.06))),
        mask_angle=float(u(-4, 4)),
        mask_shift=(float(u(-0.02, 0.02)), float(u(-0.02, 0.02))),
        elastic_amp=float(u(0.0, 0.05)),
        elastic_seed=int(rng.integers(1 << 30)),
        blur1=float(u(0.02, 0.10)),
        blur2=float(u(0.02, 0.10)),
        ratio=float(rng.choice([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])),
    )


def face_frame(lms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Face-aligned axes from 468 landmarks: origin (nose tip), u (towards the subject's
    left eye), v (downwards), eye distance."""
    eyes = lms[LEFT_EYE] - lms[RIGHT_EYE]
    dist = float(np.linalg.norm(eyes)) + 1e-6
    u = eyes / dist
    v = np.array([-u[1], u[0]])
    return lms[NOSE_TIP], u, v, dist


def region_points(lms: np.ndarray, region: str) -> np.ndarray:
    """The landmarks whose hull makes the mask for ``region``."""
    origin, u, v, dist = face_frame(lms)
    rel = lms - origin
    pu, pv = rel @ u, rel @ v
    if region == "inner":
        centre = lms.mean(0)
        d = np.linalg.norm(lms - centre, axis=1)
        keep = d <= np.quantile(d, 0.7)
    elif region == "lower":
        keep = pv > -0.35 * dist
    elif region == "upper":
        keep = pv < 0.25 * dist
    elif region == "half_left":
        keep = pu > -0.15 * dist
    elif region == "half_right":
        keep = pu < 0.15 * dist
    elif region == "mouth_nose":
        keep = (np.abs(pu) < 0.45 * dist) & (pv > -0.6 * dist) & (pv < 0.95 * dist)
    else:
        keep = np.ones(len(lms), bool)
    pts = lms[keep]
    return pts if len(pts) >= 3 else lms


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigmaX=max(sigma, 0.3), borderType=cv2.BORDER_REFLECT)


def _elastic_field(shape: tuple[int, int], amp_px: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random displacement maps for cv2.remap (same seed -> same field)."""
    h, w = shape
    g = np.random.default_rng(seed).uniform(-1, 1, (2, 5, 5)).astype(np.float32)
    dx = cv2.resize(g[0], (w, h), interpolation=cv2.INTER_CUBIC) * amp_px
    dy = cv2.resize(g[1], (w, h), interpolation=cv2.INTER_CUBIC) * amp_px
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs + dx, ys + dy


def make_mask(hull_points: np.ndarray, face: float, shape: tuple[int, int], p: ClipBlend,
              jitter: np.ndarray) -> np.ndarray:
    """Soft float32 mask ``(H, W)`` in [0, 1] from the hull of ``hull_points`` (``face``: face width, px)."""
    pts = np.asarray(hull_points, np.float64).reshape(-1, 2)
    centre = pts.mean(0)
    a = np.deg2rad(p.mask_angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * np.array(p.mask_scale)[None, :]
    shift = np.array(p.mask_shift) * face + jitter
    pts = (pts - centre) @ rot.T + centre + shift
    hull = cv2.convexHull(np.round(pts * 4).astype(np.int32))
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=2)
    mask = mask.astype(np.float32) / 255.0
    if p.elastic_amp > 0:
        mx, my = _elastic_field(shape, p.elastic_amp * face, p.elastic_seed)
        mask = cv2.remap(mask, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = _blur(mask, p.blur1 * face / 3.0)
    mask[mask < 0.999] = 0.0
    mask = _blur(mask, p.blur2 * face / 3.0)
    return mask


def alter(img: np.ndarray, p: ClipBlend, face: float) -> np.ndarray:
    """Colour and frequency alteration of a float32 RGB image in [0, 1]."""
    out = img + np.asarray(p.rgb_shift, np.float32) / 255.0
    out = np.clip((out - 0.5) * p.contrast + 0.5 + p.brightness, 0.0, 1.0)
    hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in [0, 1]
    hsv[..., 0] = (hsv[..., 0] + p.hsv_shift[0]) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * (1 + p.hsv_shift[1]), 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * (1 + p.hsv_shift[2]), 0, 1)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    h, w = out.shape[:2]
    if p.freq == "down":
        f = p.freq_amount
        small = cv2.resize(out, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    elif p.freq == "sharpen":
        out = np.clip(out + p.freq_amount * (out - _blur(out, max(1.0, face / 150.0))), 0, 1)
    return out


def seam_jitter(rng: np.random.Generator | None) -> np.ndarray:
    """A frame's sub-pixel shift of the mask (none without ``rng``)."""
    return rng.normal(0, 0.3, 2) if rng is not None else np.zeros(2)


def composite(layer: np.ndarray, base: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``layer * mask + base * (1 - mask)`` of float32 RGB images in [0, 1], as RGB uint8."""
    fake = layer * mask[..., None] + base * (1.0 - mask[..., None])
    return np.clip(fake * 255.0 + 0.5, 0, 255).astype(np.uint8)


def blend_frame(img: np.ndarray, lms: np.ndarray, p: ClipBlend,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-fake of one RGB uint8 face crop with its 468 landmarks (crop pixels): the
    hull of ``p.region``'s landmarks, face width from the eye distance (see :func:`blend_face`)."""
    _, _, _, dist = face_frame(lms)
    return blend_face(img, region_points(lms, p.region), FACE_PER_EYES * dist, p, rng, warp_centre=lms.mean(0))


def blend_face(img: np.ndarray, hull_points: np.ndarray, face: float, p: ClipBlend,
               rng: np.random.Generator | None = None,
               warp_centre: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Blend an altered copy of RGB uint8 ``img`` into itself inside the hull of ``hull_points``.

    ``face`` is the face width in pixels (sizes in ``p`` are fractions of it); the source
    copy is rescaled about ``warp_centre`` (default: the points' mean). ``p.region`` is
    not used here: the caller chose the points. Returns ``(fake uint8, mask float32)``.
    ``rng`` adds per-frame jitter (sub-pixel seam shift, +-0.03 blend ratio); without it
    the result is a pure function of the inputs.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {img.dtype} {img.shape}")
    hull_points = np.asarray(hull_points, np.float64).reshape(-1, 2)
    if len(hull_points) < 3:
        raise ValueError(f"need at least 3 points for a face hull, got {len(hull_points)}")
    h, w = img.shape[:2]
    jitter = seam_jitter(rng)
    ratio = float(np.clip(p.ratio + (rng.uniform(-0.03, 0.03) if rng is not None else 0.0), 0.1, 1.0))
    base = img.astype(np.float32) / 255.0
    source, target = base, base
    if p.alter_source:
        source = alter(base, p, face)
    else:
        target = alter(base, p, face)
    centre = hull_points.mean(0) if warp_centre is None else warp_centre
    sx, sy = p.src_scale
    m = np.array([[sx, 0, (1 - sx) * centre[0] + p.src_shift[0] * face],
                  [0, sy, (1 - sy) * centre[1] + p.src_shift[1] * face]], np.float32)
    source = cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask = make_mask(hull_points, face, (h, w), p, jitter) * ratio
    return composite(source, target, mask), mask
