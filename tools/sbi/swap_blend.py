"""Face-swap pseudo-fakes: another person's face blended into a real face.

Written from the description in Li et al., "Face X-ray for More General Face Forgery
Detection", CVPR 2020: for a target face, take a source face of *another* person whose
landmarks are close to the target's, align it to the target's landmarks, bring its
colours towards the target's, and blend it in through a deformed, softened landmark
mask. Where self-blended images (:mod:`stream_guard.synth.self_blend`) teach the seam of
a face with itself, these pairs add what a real swap adds: a different person's skin,
features and lighting inside the seam.

The mask, its deformation and softening, and the optional colour / frequency alteration
of the source come from :class:`~stream_guard.synth.self_blend.ClipBlend`, drawn once
per clip. A clip's source is drawn once too; a video source gives consecutive frames.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import cv2
import numpy as np

from stream_guard.synth.self_blend import (FACE_PER_EYES, ClipBlend, alter, composite, face_frame, make_mask,
                                           region_points, sample_clip_blend, seam_jitter)

SHAPE_POINTS = np.arange(0, 468, 3)  # every third mesh point: enough for shape and alignment
SWAP_REGIONS = ("full", "full", "full", "inner", "mouth_nose")


def normalised_shape(landmarks: np.ndarray) -> np.ndarray:
    """The mesh's :data:`SHAPE_POINTS`, centred and scaled to unit RMS radius, ``[K, 2]``."""
    p = np.asarray(landmarks, np.float64)[SHAPE_POINTS, :2]
    p = p - p.mean(0)
    return p / (np.sqrt((p ** 2).sum(1).mean()) + 1e-9)


def procrustes_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS distance between two normalised shapes after the best rotation of ``a`` onto ``b``."""
    u, _, vt = np.linalg.svd(a.T @ b)
    return float(np.sqrt(((a @ (u @ vt) - b) ** 2).sum(1).mean()))


class ShapeIndex:
    """Faces indexed by the landmark shape of their middle frame, each with a source key;
    :meth:`nearest` never returns a face of the asking face's source."""

    def __init__(self, faces: list, key: Callable[[object], str]) -> None:
        if not faces:
            raise ValueError("no faces to index")
        self.faces = faces
        self.keys = [key(f) for f in faces]
        self.shapes = np.stack([normalised_shape(f.landmarks[len(f) // 2]) for f in faces])

    def nearest(self, landmarks: np.ndarray, exclude: str, rng: np.random.Generator, k: int = 12):
        """One of the ``k`` faces closest in shape to ``landmarks`` (Procrustes), not of source ``exclude``;
        None when every face is of that source."""
        s = normalised_shape(landmarks)
        rough = np.sqrt(((self.shapes - s) ** 2).sum(2).mean(1))  # rotation-free first cut
        shortlist = [i for i in np.argsort(rough) if self.keys[i] != exclude][: 4 * k]
        if not shortlist:
            return None
        best = sorted(shortlist, key=lambda i: procrustes_distance(s, self.shapes[i]))[:k]
        return self.faces[int(rng.choice(best))]


def colour_transfer(source: np.ndarray, target: np.ndarray, mask: np.ndarray, amount: float) -> np.ndarray:
    """``source`` (float32 RGB in [0, 1]) moved ``amount`` of the way to ``target``'s Lab mean and
    spread, both measured where ``mask`` > 0.5 (Reinhard et al.'s colour transfer)."""
    inside = mask > 0.5
    if amount <= 0 or inside.sum() < 50:
        return source
    a, b = cv2.cvtColor(source, cv2.COLOR_RGB2LAB), cv2.cvtColor(target, cv2.COLOR_RGB2LAB)
    ma, sa = a[inside].mean(0), a[inside].std(0) + 1e-3
    mb, sb = b[inside].mean(0), b[inside].std(0) + 1e-3
    out = (a - ma) * (1 + amount * (sb / sa - 1)) + ma + amount * (mb - ma)
    out[..., 0] = np.clip(out[..., 0], 0, 100)
    return np.clip(cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2RGB), 0, 1)


@dataclass(frozen=True)
class SwapBlend:
    """One clip's swap parameters: the mask (``blend``'s region, deformation, softening and
    ratio), how far the source's colours move to the target's, and whether the source also
    gets ``blend``'s colour / frequency alteration."""

    blend: ClipBlend
    transfer: float
    alter_source: bool


def sample_swap_blend(rng: np.random.Generator) -> SwapBlend:
    """Draw one clip's swap parameters (mostly whole-face masks at full strength)."""
    blend = sample_clip_blend(rng)
    blend = replace(blend, ratio=float(rng.choice([0.5, 0.75, 1.0, 1.0, 1.0, 1.0])),
                    region=str(rng.choice(SWAP_REGIONS)))
    return SwapBlend(blend, transfer=float(rng.choice([0.0, 0.5, 0.8, 1.0, 1.0])),
                     alter_source=bool(rng.random() < 0.4))


def swap_frame(target: np.ndarray, target_lms: np.ndarray, source: np.ndarray, source_lms: np.ndarray,
               p: SwapBlend, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Blend the face of ``source`` (any RGB uint8 image, its 468 landmarks in its pixels) into the
    RGB uint8 face crop ``target`` (landmarks in crop pixels). The source is aligned to the target by
    the similarity transform between the two meshes. Returns ``(fake uint8, mask float32)``;
    ``rng`` adds the per-frame seam jitter of :func:`~stream_guard.synth.self_blend.blend_frame`."""
    h, w = target.shape[:2]
    m, _ = cv2.estimateAffinePartial2D(np.asarray(source_lms, np.float32)[SHAPE_POINTS, :2],
                                       np.asarray(target_lms, np.float32)[SHAPE_POINTS, :2], method=cv2.LMEDS)
    if m is None:
        raise ValueError("the two faces' landmarks admit no similarity transform")
    base = target.astype(np.float32) / 255.0
    pasted = cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT).astype(np.float32) / 255.0
    face = FACE_PER_EYES * face_frame(target_lms)[3]
    jitter = seam_jitter(rng)
    mask = make_mask(region_points(target_lms, p.blend.region), face, (h, w), p.blend, jitter) * p.blend.ratio
    pasted = colour_transfer(pasted, base, mask, p.transfer)
    if p.alter_source:
        pasted = alter(pasted, p.blend, face)
    return composite(pasted, base, mask), mask
