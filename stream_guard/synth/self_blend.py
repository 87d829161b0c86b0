"""Self-blended pseudo-fakes, after Shiohara & Yamasaki, "Detecting Deepfakes with
Self-Blended Images" (CVPR 2022). Written from the paper's description only.

One real face is turned into a *source* and a *target* copy of itself. One copy gets
its appearance altered (colour, hue/saturation, brightness/contrast, a down-up
resample or a sharpening), the source is slightly rescaled and shifted, the face
mask is deformed (small affine + smooth elastic warp) and softened (erosion or
dilation, Gaussian blur, a blend ratio), and the two are blended::

    blended = mask * source + (1 - mask) * target

The result carries the blending traces (a seam, a tone step, a resolution change)
that face-swap methods leave, without any second identity.

Every random choice lives in :class:`BlendParams`, so the same parameters applied
to consecutive frames give a temporally consistent fake; geometric quantities are
fractions of the face size, measured from the mask, so they follow the face.
The whole image is processed: pass a crop around the face, not a 4K frame.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

# Blend ratios as listed in the paper: full blends are drawn more often.
_BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
_ELASTIC_WAVES = 4  # sinusoids per axis in the elastic displacement field


@dataclass(frozen=True, slots=True)
class BlendParams:
    """All choices one self-blend makes. Lengths are fractions of the face size
    (the longer side of the mask's bounding box); colours are in ``[0, 1]`` units."""

    alter_source: bool = True  # which copy gets the appearance change
    rgb_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    hue_shift_deg: float = 0.0
    saturation_scale: float = 1.0
    brightness: float = 0.0
    contrast: float = 1.0  # about the image mean
    resample_factor: float = 1.0  # < 1: downscale by this factor, then back up
    sharpen_amount: float = 0.0  # unsharp-mask gain, 0 = off
    source_scale: float = 1.0  # source copy rescaled about the face centre
    source_shift: tuple[float, float] = (0.0, 0.0)
    mask_rotation_deg: float = 0.0
    mask_scale: tuple[float, float] = (1.0, 1.0)  # x, y about the face centre
    mask_shift: tuple[float, float] = (0.0, 0.0)
    elastic_amplitude: float = 0.0  # peak displacement of the mask outline
    elastic_seed: int = 0  # fixes the shape of the elastic field
    morph: float = 0.0  # > 0 dilates the mask, < 0 erodes it
    blur: float = 0.03  # Gaussian sigma of the mask edge
    blend_ratio: float = 1.0  # peak opacity of the source inside the mask


def sample_blend_params(rng: np.random.Generator) -> BlendParams:
    """Draw one random, plausible set of blending choices."""
    freq = rng.choice(3, p=(0.4, 0.3, 0.3))  # none, down-up resample, sharpen
    return BlendParams(
        alter_source=bool(rng.random() < 0.5),
        rgb_shift=_uniform3(rng, 0.05),
        hue_shift_deg=float(rng.uniform(-8.0, 8.0)),
        saturation_scale=float(rng.uniform(0.8, 1.2)),
        brightness=float(rng.uniform(-0.08, 0.08)),
        contrast=float(rng.uniform(0.85, 1.15)),
        resample_factor=float(rng.uniform(0.4, 0.8)) if freq == 1 else 1.0,
        sharpen_amount=float(rng.uniform(0.3, 1.2)) if freq == 2 else 0.0,
        source_scale=float(rng.uniform(0.95, 1.05)),
        source_shift=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))),
        mask_rotation_deg=float(rng.uniform(-5.0, 5.0)),
        mask_scale=(float(rng.uniform(0.92, 1.08)), float(rng.uniform(0.92, 1.08))),
        mask_shift=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))),
        elastic_amplitude=float(rng.uniform(0.0, 0.04)),
        elastic_seed=int(rng.integers(0, 2**31 - 1)),
        morph=float(rng.uniform(-0.06, 0.03)),
        blur=float(rng.uniform(0.01, 0.06)),
        blend_ratio=float(rng.choice(_BLEND_RATIOS)),
    )


# Per-frame jitter (standard deviations) for continuous fields: small enough that a
# clip keeps one consistent "fake", large enough that frames are not identical.
_JITTER_SIGMA: tuple[tuple[str, float], ...] = (
    ("hue_shift_deg", 0.3),
    ("saturation_scale", 0.005),
    ("brightness", 0.003),
    ("contrast", 0.005),
    ("source_scale", 0.002),
    ("mask_rotation_deg", 0.3),
    ("elastic_amplitude", 0.001),
    ("blur", 0.001),
)
_JITTER_PAIR_SIGMA: tuple[tuple[str, float], ...] = (
    ("source_shift", 0.002),
    ("mask_shift", 0.002),
    ("mask_scale", 0.003),
)


def jitter_blend_params(params: BlendParams, rng: np.random.Generator, strength: float = 1.0) -> BlendParams:
    """A copy of ``params`` with small Gaussian noise on its continuous fields
    (per-frame variation around a per-clip choice); discrete choices are kept."""
    changes: dict[str, object] = {}
    for name, sigma in _JITTER_SIGMA:
        changes[name] = float(getattr(params, name) + rng.normal(0.0, sigma * strength))
    for name, sigma in _JITTER_PAIR_SIGMA:
        a, b = getattr(params, name)
        noise = rng.normal(0.0, sigma * strength, size=2)
        changes[name] = (float(a + noise[0]), float(b + noise[1]))
    changes["elastic_amplitude"] = max(0.0, float(changes["elastic_amplitude"]))  # type: ignore[arg-type]
    changes["blur"] = max(0.0, float(changes["blur"]))  # type: ignore[arg-type]
    return dataclasses.replace(params, **changes)  # type: ignore[arg-type]


def face_mask_from_landmarks(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Binary face mask (float32, 0/1, ``shape[:2]``) filling the convex hull of ``(K, 2)`` landmarks."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] < 3:
        raise ValueError(f"need at least 3 landmarks for a face hull, got {pts.shape[0]}")
    fixed = np.round(pts * 16.0).astype(np.int32).reshape(-1, 1, 2)  # 4 fractional bits
    hull = cv2.convexHull(fixed)
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(np.float32)


def self_blend(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    params: BlendParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend a manipulated copy of ``image`` into itself inside ``mask``.

    ``image`` is RGB uint8 ``(H, W, 3)``; ``mask`` is ``(H, W)``, nonzero on the face.
    ``rng`` draws the parameters when ``params`` is None (otherwise it is unused and the
    result is a pure function of the inputs). Returns the blended RGB uint8 image and
    the final soft mask (float32 in ``[0, 1]``) that was used.
    """
    _check_inputs(image, mask)
    if params is None:
        params = sample_blend_params(rng)
    face = (np.asarray(mask) > 0).astype(np.float32)
    centre, size = _face_frame(face)
    real = image.astype(np.float32) * (1.0 / 255.0)
    altered = _alter_appearance(real, params)
    source, target = (altered, real) if params.alter_source else (real, altered)
    source = _warp_source(source, params, centre, size)
    soft = _soften_mask(_deform_mask(face, params, centre, size), params, size)
    alpha = soft[..., None]
    blended = alpha * source + (1.0 - alpha) * target
    out = np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
    return out, soft


def _uniform3(rng: np.random.Generator, limit: float) -> tuple[float, float, float]:
    a, b, c = rng.uniform(-limit, limit, size=3)
    return float(a), float(b), float(c)


def _check_inputs(image: np.ndarray, mask: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if np.asarray(mask).shape != image.shape[:2]:
        raise ValueError(f"mask shape {np.asarray(mask).shape} does not match image {image.shape[:2]}")


def _face_frame(face: np.ndarray) -> tuple[tuple[float, float], float]:
    """Centre and size (longer bounding-box side, px) of a binary face mask."""
    ys, xs = np.nonzero(face)
    if xs.size == 0:
        raise ValueError("the face mask is empty")
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return (float(x0 + x1) / 2.0, float(y0 + y1) / 2.0), float(max(x1 - x0, y1 - y0))


def _alter_appearance(img: np.ndarray, p: BlendParams) -> np.ndarray:
    """Colour, then frequency changes on a float RGB image in ``[0, 1]``."""
    out = np.clip(img + np.asarray(p.rgb_shift, np.float32), 0.0, 1.0)
    if p.hue_shift_deg != 0.0 or p.saturation_scale != 1.0:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)  # float: H in [0, 360), S, V in [0, 1]
        hsv[..., 0] = np.mod(hsv[..., 0] + p.hue_shift_deg, 360.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * p.saturation_scale, 0.0, 1.0)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    mean = out.mean(axis=(0, 1), keepdims=True)
    out = (out - mean) * p.contrast + mean + p.brightness
    if p.resample_factor < 1.0:
        out = _down_up(out, p.resample_factor)
    if p.sharpen_amount > 0.0:
        out = out + p.sharpen_amount * (out - cv2.GaussianBlur(out, (0, 0), 1.0))
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def _down_up(img: np.ndarray, factor: float) -> np.ndarray:
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _affine_about(
    centre: tuple[float, float], angle_deg: float, scale: tuple[float, float], shift: tuple[float, float]
) -> np.ndarray:
    """2x3 matrix: scale (x, y), rotate by ``angle_deg`` about ``centre``, then shift (px)."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    lin = rot @ np.diag(scale)
    c = np.asarray(centre)
    offset = c - lin @ c + np.asarray(shift)
    return np.hstack([lin, offset[:, None]]).astype(np.float64)


def _warp_source(img: np.ndarray, p: BlendParams, centre: tuple[float, float], size: float) -> np.ndarray:
    if p.source_scale == 1.0 and p.source_shift == (0.0, 0.0):
        return img
    shift = (p.source_shift[0] * size, p.source_shift[1] * size)
    m = _affine_about(centre, 0.0, (p.source_scale, p.source_scale), shift)
    h, w = img.shape[:2]
    # cubic keeps the source's detail: any softening is the down-up step's job
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)


def _deform_mask(face: np.ndarray, p: BlendParams, centre: tuple[float, float], size: float) -> np.ndarray:
    """Affine, then elastic deformation of the binary mask (float result)."""
    h, w = face.shape
    shift = (p.mask_shift[0] * size, p.mask_shift[1] * size)
    m = _affine_about(centre, p.mask_rotation_deg, p.mask_scale, shift)
    out = cv2.warpAffine(face, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
    if p.elastic_amplitude > 0.0:
        out = _elastic(out, p.elastic_amplitude * size, p.elastic_seed, centre, size)
    return out


def _elastic(mask: np.ndarray, amplitude_px: float, seed: int, centre: tuple[float, float], size: float) -> np.ndarray:
    """Smooth elastic warp inside the face's neighbourhood.

    The displacement is a sum of a few low-frequency sinusoids in face-normalised
    coordinates, so one seed gives the same shape at every resolution and position.
    """
    h, w = mask.shape
    reach = size * 0.8 + amplitude_px  # only the face's neighbourhood can be nonzero
    x0, x1 = max(0, int(centre[0] - reach)), min(w, int(math.ceil(centre[0] + reach)))
    y0, y1 = max(0, int(centre[1] - reach)), min(h, int(math.ceil(centre[1] + reach)))
    if x0 >= x1 or y0 >= y1:
        return mask
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)
    gx, gy = np.meshgrid(xs, ys)
    u, v = (gx - centre[0]) / size, (gy - centre[1]) / size
    field_rng = np.random.default_rng(seed)
    dx = _wave_field(u, v, field_rng)
    dy = _wave_field(u, v, field_rng)
    map_x = gx + amplitude_px * dx
    map_y = gy + amplitude_px * dy
    out = mask.copy()
    out[y0:y1, x0:x1] = cv2.remap(mask, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return out


def _wave_field(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sum of random sinusoids (0.5-2 cycles per face), scaled to peak magnitude <= 1."""
    freq = rng.uniform(0.5, 2.0, size=_ELASTIC_WAVES) * 2.0 * math.pi
    angle = rng.uniform(0.0, 2.0 * math.pi, size=_ELASTIC_WAVES)
    phase = rng.uniform(0.0, 2.0 * math.pi, size=_ELASTIC_WAVES)
    weight = rng.uniform(0.5, 1.0, size=_ELASTIC_WAVES)
    weight = weight / weight.sum()
    field = np.zeros_like(u)
    for f, a, ph, wt in zip(freq, angle, phase, weight):
        field += np.float32(wt) * np.sin(np.float32(f) * (math.cos(a) * u + math.sin(a) * v) + np.float32(ph))
    return field


def _soften_mask(mask: np.ndarray, p: BlendParams, size: float) -> np.ndarray:
    """Erode/dilate, blur and scale by the blend ratio; float32 in ``[0, 1]``."""
    out = mask
    radius = int(round(abs(p.morph) * size))
    if radius >= 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        out = cv2.dilate(out, kernel) if p.morph > 0 else cv2.erode(out, kernel)
    sigma = p.blur * size
    if sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    return np.clip(out * p.blend_ratio, 0.0, 1.0).astype(np.float32, copy=False)
