"""Re-rendered pseudo-fakes: a face that stands in for a talking-head generator's output.

One-image talking-head generators (motion-transfer warps such as the keypoint-driven
ones SadTalker builds on, or diffusion renderers such as AniPortrait's) do not paste in
another person: they redraw the subject's own face. What they leave, by their published
descriptions, is a face that was (1) resampled through a dense motion field that moves
with the mouth and jaw, (2) rendered at the generator's working resolution (often a
256-512 px crop) and (3) pasted back into the frame, through a feathered box around the
crop or through the face outline. This module fakes those three steps on a real face,
frame by frame, with one set of parameters per clip (the warp's phase advances per
frame, as a speaking mouth does); the pasted layer is blended through
:func:`~stream_guard.synth.self_blend.make_mask`'s deformed, softened masks.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from stream_guard.synth.self_blend import (FACE_PER_EYES, LOWER_LIP, UPPER_LIP, ClipBlend, composite,
                                           face_frame, make_mask, region_points, sample_clip_blend, seam_jitter)


@dataclass(frozen=True)
class RerenderBlend:
    """One clip's re-rendering parameters (sizes relative to face width)."""

    mask: ClipBlend  # mask deformation, softening and ratio (its region: "full" or a box)
    box: bool  # paste back through a box around the face (else the face outline)
    box_scale: float  # the box's side / the landmarks' extent
    warp_amp: float  # peak displacement of the mouth-centred motion field
    warp_reach: float  # the field's Gaussian radius around the mouth
    warp_seeds: tuple[int, int]  # two smooth fields, mixed by the frame's phase
    phase_step: float  # radians per frame
    scale: float  # generator resolution / crop resolution
    smooth: float  # edge-preserving smoothing strength (0: none)
    gain: tuple[float, float, float]  # per-channel colour drift of the rendered layer


def sample_rerender_blend(rng: np.random.Generator) -> RerenderBlend:
    """Draw one clip's re-rendering parameters."""
    u = rng.uniform
    box = bool(rng.random() < 0.5)
    mask = replace(sample_clip_blend(rng), region="full", ratio=float(rng.choice([0.75, 1.0, 1.0, 1.0])),
                   mask_scale=(float(u(0.98, 1.1)), float(u(0.98, 1.1))))
    return RerenderBlend(
        mask=mask, box=box, box_scale=float(u(1.05, 1.4)),
        warp_amp=float(u(0.01, 0.05)), warp_reach=float(u(0.25, 0.6)),
        warp_seeds=(int(rng.integers(1 << 30)), int(rng.integers(1 << 30))),
        phase_step=float(u(0.3, 1.2)),
        scale=float(u(0.35, 0.85)),
        smooth=float(rng.choice([0.0, u(0.3, 1.0)])),
        gain=tuple(float(v) for v in u(0.96, 1.04, 3)))


def smooth_field(shape: tuple[int, int], seed: int, grid: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Two smooth displacement maps in [-1, 1] (a cubic upsampling of a coarse random grid)."""
    h, w = shape
    g = np.random.default_rng(seed).uniform(-1, 1, (2, grid, grid)).astype(np.float32)
    return (cv2.resize(g[0], (w, h), interpolation=cv2.INTER_CUBIC),
            cv2.resize(g[1], (w, h), interpolation=cv2.INTER_CUBIC))


def rerender_frame(crop: np.ndarray, lms: np.ndarray, p: RerenderBlend, frame: int,
                   rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The re-rendered version of RGB uint8 face ``crop`` (468 landmarks in its pixels), as frame
    number ``frame`` of its clip. Returns ``(fake uint8, mask float32)``; ``rng`` adds the per-frame
    seam jitter of :func:`~stream_guard.synth.self_blend.blend_frame`."""
    h, w = crop.shape[:2]
    face = FACE_PER_EYES * face_frame(lms)[3]
    mouth = (lms[UPPER_LIP] + lms[LOWER_LIP]) / 2
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    reach = p.warp_reach * face
    falloff = np.exp(-((xs - mouth[0]) ** 2 + (ys - mouth[1]) ** 2) / (2 * reach ** 2))
    (ax, ay), (bx, by) = smooth_field((h, w), p.warp_seeds[0]), smooth_field((h, w), p.warp_seeds[1])
    c, s = np.cos(p.phase_step * frame), np.sin(p.phase_step * frame)
    amp = p.warp_amp * face * falloff
    map_x = (xs + amp * (c * ax + s * bx)).astype(np.float32)
    map_y = (ys + amp * (c * ay + s * by)).astype(np.float32)
    layer = cv2.remap(crop, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    small = (max(16, int(w * p.scale)), max(16, int(h * p.scale)))
    layer = cv2.resize(cv2.resize(layer, small, interpolation=cv2.INTER_AREA), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    if p.smooth > 0:
        layer = cv2.bilateralFilter(layer, 5, 12 + 30 * p.smooth, 2 + 3 * p.smooth)
    layer = layer.astype(np.float32) / 255.0 * np.asarray(p.gain, np.float32)
    if p.box:
        lo, hi = lms[:, :2].min(0), lms[:, :2].max(0)
        centre, half = (lo + hi) / 2, (hi - lo).max() / 2 * p.box_scale
        hull = centre + half * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    else:
        hull = region_points(lms, "full")
    jitter = seam_jitter(rng)
    mask = make_mask(hull, face, (h, w), p.mask, jitter) * p.mask.ratio
    base = crop.astype(np.float32) / 255.0
    return composite(layer, base, mask), mask
