"""Face-crop cache access and real / pseudo-fake sequence sampling."""
from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from tools.sbi.augment import (Aug, CropJitter, apply_aug, crop_with_jitter, sample_aug, sample_crop,
                               small_face_aug, tight_face_aug)
from tools.sbi.rerender_blend import rerender_frame, sample_rerender_blend
from tools.sbi.swap_blend import ShapeIndex, SwapBlend, sample_swap_blend, swap_frame
from tools.sbi.pack_faces import decode_frames
from stream_guard.synth.self_blend import blend_frame, sample_clip_blend

if TYPE_CHECKING:  # torch only where a generator is used
    from tools.swapgen.model import FaceSwapper


@dataclass
class Clip:
    """One cached face track (see :mod:`tools.sbi.prepare_faces`)."""

    clip_id: str
    file: str
    label: str
    kind: str
    frames: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def load_cache(folder: str | Path, labels: set[str] | None = None) -> list[Clip]:
    """All clips listed in ``folder/index.tsv`` (optionally only some labels), in memory.
    Reads raw caches and JPEG-packed ones (:mod:`tools.sbi.pack_faces`)."""
    folder = Path(folder)
    clips = []
    with open(folder / "index.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if labels is not None and row["label"] not in labels:
                continue
            with np.load(folder / "clips" / f"{row['clip']}.npz") as d:
                frames = d["frames"] if "frames" in d.files else decode_frames(d["jpeg"], d["jpeg_offsets"])
                clips.append(Clip(row["clip"], row["file"], row["label"], row["kind"],
                                  frames, d["boxes"], d["landmarks"]))
    return clips


def is_held_out(file: str, fraction: float) -> bool:
    """Deterministic split by source file (all faces of one file on the same side)."""
    return (zlib.crc32(file.encode()) % 1000) < fraction * 1000


@dataclass(frozen=True)
class SampleOptions:
    size: int = 224
    margin: float = 0.25
    window: int = 8
    aug_strength: float = 1.0
    jitter: float = 1.0
    small_faces: bool = False  # every pair shrunk to a small face and H.264-re-encoded (augment.small_face_aug)
    tight_faces: bool = False  # every pair cut down to its face, as a face-crop dataset's (augment.tight_face_aug)


def sample_pair(clip: Clip, length: int, opts: SampleOptions,
                rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A real sequence and its pseudo-fake twin, ``length`` frames each, same crop and
    augmentation. Photos repeat their single frame (crop jitter and noise differ)."""
    reals, fakes, _ = sample_pair_with_landmarks(clip, length, opts, rng)
    return reals, fakes


def sample_pair_with_landmarks(clip: Clip, length: int, opts: SampleOptions, rng: np.random.Generator
                               ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """:func:`sample_pair` (the same draws from ``rng``) plus each frame's 468 landmarks in the
    returned crops' pixels (mirrored with the crop when the augmentation flips it)."""
    idx = clip_indices(len(clip), length, rng)
    jit = sample_crop(rng, opts.margin, opts.jitter)
    blend = sample_clip_blend(rng)
    aug = clip_aug(opts, rng)
    reals, fakes, marks = [], [], []
    for i in idx:
        frame_jit = jit
        if len(clip) == 1 and length > 1:  # photo as a sequence: small per-copy crop jitter
            frame_jit = type(jit)(jit.margin + rng.uniform(-0.01, 0.01),
                                  jit.dx + rng.uniform(-0.006, 0.006), jit.dy + rng.uniform(-0.006, 0.006))
        crop, lms = crop_with_jitter(clip.frames[i], clip.boxes[i], clip.landmarks[i], opts.size, frame_jit)
        fake, _ = blend_frame(crop, lms, blend, rng)
        reals.append(crop)
        fakes.append(fake)
        marks.append(flipped_landmarks(lms, opts.size, aug.flip))
    return augmented_pair(reals, fakes, aug, rng) + (marks,)


def clip_indices(n: int, length: int, rng: np.random.Generator) -> list[int]:
    """``length`` consecutive frame indices of an ``n``-frame clip (the last one repeated when short)."""
    if n >= length:
        start = int(rng.integers(0, n - length + 1))
        return list(range(start, start + length))
    return [min(i, n - 1) for i in range(length)] if n > 1 else [0] * length


def clip_aug(opts: SampleOptions, rng: np.random.Generator) -> Aug:
    """One pair's augmentation (the small-face kind with ``opts.small_faces``, cut down to the face
    with ``opts.tight_faces``)."""
    aug = sample_aug(rng, opts.aug_strength)
    aug = small_face_aug(aug, rng) if opts.small_faces else aug
    return tight_face_aug(aug, rng, opts.margin) if opts.tight_faces else aug


def flipped_landmarks(lms: np.ndarray, size: int, flip: bool) -> np.ndarray:
    """Crop landmarks mirrored as :func:`~tools.sbi.augment.apply_aug` mirrors the crop."""
    return np.c_[size - 1 - lms[:, 0], lms[:, 1:]] if flip else lms


def augmented_pair(reals: list[np.ndarray], fakes: list[np.ndarray], aug: Aug,
                   rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Both sequences through the same augmentation (the same noise too)."""
    seed = int(rng.integers(1 << 30))
    return apply_aug(reals, aug, seed), apply_aug(fakes, aug, seed)


def source_key(clip: Clip) -> str:
    """What a clip's faces share with other clips: its file (a video's several face tracks share it)."""
    return clip.file


def sample_swap_pair_with_landmarks(clip: Clip, sources: ShapeIndex, length: int, opts: SampleOptions,
                                    rng: np.random.Generator
                                    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """As :func:`sample_pair_with_landmarks`, but the pseudo-fake has another person's face blended in
    (:mod:`tools.sbi.swap_blend`): a face of ``sources`` close in shape, not from ``clip``'s file."""
    idx = clip_indices(len(clip), length, rng)
    source = sources.nearest(clip.landmarks[idx[0]], source_key(clip), rng)
    if source is None:
        raise ValueError(f"no face of another file to swap into {clip.file}")
    source_idx = clip_indices(len(source), length, rng)
    jit = sample_crop(rng, opts.margin, opts.jitter)
    swap = sample_swap_blend(rng)
    aug = clip_aug(opts, rng)
    return _pair_sequences(clip, idx, jit, aug, opts, rng, lambda k, crop, lms: swap_frame(
        crop, lms, source.frames[source_idx[k]], source.landmarks[source_idx[k]], swap, rng)[0])


def sample_rerender_pair_with_landmarks(clip: Clip, length: int, opts: SampleOptions, rng: np.random.Generator
                                        ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """As :func:`sample_pair_with_landmarks`, but the pseudo-fake is the face re-rendered as a
    talking-head generator would (:mod:`tools.sbi.rerender_blend`)."""
    idx = clip_indices(len(clip), length, rng)
    jit = sample_crop(rng, opts.margin, opts.jitter)
    rerender = sample_rerender_blend(rng)
    aug = clip_aug(opts, rng)
    return _pair_sequences(clip, idx, jit, aug, opts, rng,
                           lambda k, crop, lms: rerender_frame(crop, lms, rerender, k, rng)[0])


def sample_learned_swap_blend(rng: np.random.Generator) -> SwapBlend:
    """A learned swap's blend: the face-swap pairs' mask and colour transfer, without altering the
    source (what the generator draws is the point, not an alteration of it)."""
    return replace(sample_swap_blend(rng), alter_source=False)


def sample_learned_swap_pair_with_landmarks(clip: Clip, swapper: FaceSwapper, length: int, opts: SampleOptions,
                                            rng: np.random.Generator
                                            ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """As :func:`sample_pair_with_landmarks`, but the pseudo-fake's face is redrawn as another identity
    by a trained swap generator (:mod:`tools.swapgen`) and blended in through the face-swap pairs'
    mask and colour transfer (:func:`~tools.sbi.swap_blend.swap_frame`); one identity per clip."""
    idx = clip_indices(len(clip), length, rng)
    jit = sample_crop(rng, opts.margin, opts.jitter)
    identity = swapper.target_identity(clip.file, rng)
    swap = sample_learned_swap_blend(rng)
    aug = clip_aug(opts, rng)
    return _pair_sequences(clip, idx, jit, aug, opts, rng,
                           lambda k, crop, lms: learned_swap_frame(crop, lms, swapper, identity, swap, rng)[0])


def learned_swap_frame(crop: np.ndarray, landmarks: np.ndarray, swapper: FaceSwapper, identity: int,
                       swap: SwapBlend, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``crop``'s face redrawn by ``swapper`` as ``identity`` and blended in: ``(fake uint8, mask float32)``."""
    return swap_frame(crop, landmarks, swapper.swap(crop, landmarks, identity), landmarks, swap, rng)


# A pseudo-fake of one crop: (position in the sequence, crop, its landmarks) -> fake crop.
FakeOf = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


def _pair_sequences(clip: Clip, idx: list[int], jit: CropJitter, aug: Aug, opts: SampleOptions,
                    rng: np.random.Generator, fake_of: FakeOf
                    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Frames ``idx`` of ``clip`` cropped with ``jit``, their fakes ``fake_of(position, crop, landmarks)``,
    both through ``aug``, and the landmarks in the returned crops' pixels."""
    reals, fakes, marks = [], [], []
    for k, i in enumerate(idx):
        crop, lms = crop_with_jitter(clip.frames[i], clip.boxes[i], clip.landmarks[i], opts.size, jit)
        fakes.append(fake_of(k, crop, lms))
        reals.append(crop)
        marks.append(flipped_landmarks(lms, opts.size, aug.flip))
    return augmented_pair(reals, fakes, aug, rng) + (marks,)


class PairSampler:
    """Draws clips (videos weighted up) and builds real/fake training sequences."""

    def __init__(self, clips: list[Clip], opts: SampleOptions, video_weight: float = 3.0) -> None:
        if not clips:
            raise ValueError("no clips to sample from")
        self.clips = clips
        self.opts = opts
        w = np.array([video_weight if c.kind == "video" else 1.0 for c in clips])
        self.p = w / w.sum()

    def batch(self, n_pairs: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(x uint8 [2*n_pairs, length, S, S, 3], y float32 [2*n_pairs])``: reals then fakes."""
        reals, fakes = [], []
        for k in rng.choice(len(self.clips), size=n_pairs, p=self.p):
            r, f = sample_pair(self.clips[k], length, self.opts, rng)
            reals.append(np.stack(r))
            fakes.append(np.stack(f))
        x = np.stack(reals + fakes)
        y = np.concatenate([np.zeros(n_pairs, np.float32), np.ones(n_pairs, np.float32)])
        return x, y


def synthetic_landmarks(box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """468 face-like points inside ``box`` (for smoke tests without the face-mesh model):
    an elliptic cloud with the eye corners, nose tip and lips at their mesh indices."""
    x1, y1, x2, y2 = box
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2 + 0.05 * (y2 - y1), 0.42 * (x2 - x1), 0.55 * (y2 - y1)
    t = rng.uniform(0, 2 * np.pi, 468)
    r = np.sqrt(rng.uniform(0, 1, 468))
    pts = np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], 1)
    w = x2 - x1
    pts[33] = (cx - 0.3 * w, cy - 0.15 * w)
    pts[263] = (cx + 0.3 * w, cy - 0.15 * w)
    pts[1] = (cx, cy + 0.05 * w)
    pts[13] = (cx, cy + 0.25 * w)
    pts[14] = (cx, cy + 0.3 * w)
    return pts.astype(np.float32)


def synthetic_clips(n: int, seed: int = 0, size: int = 320, margin: float = 0.5) -> list[Clip]:
    """Tiny cache from skimage's astronaut with jitter: photos and 12-frame 'videos'."""
    from skimage import data

    from stream_guard.faces.crop import crop_face, crop_matrix, transform_points

    rng = np.random.default_rng(seed)
    image = np.ascontiguousarray(data.astronaut())
    face = np.array([165.0, 70.0, 265.0, 190.0])
    clips = []
    for k in range(n):
        frames_n = 1 if k % 2 == 0 else 12
        frames, boxes, lms = [], [], []
        base = face + rng.normal(0, 4, 4)
        for _ in range(frames_n):
            b = (base + rng.normal(0, 1.5, 4)).astype(np.float32)
            m = crop_matrix(b, size, margin)
            frames.append(crop_face(image, b, size, margin))
            boxes.append(transform_points(b.reshape(2, 2), m).reshape(4))
            lms.append(transform_points(synthetic_landmarks(b, rng), m))
        clips.append(Clip(f"synthetic_{k}", f"synthetic_{k}.png", "real", "video" if frames_n > 1 else "photo",
                          np.stack(frames), np.stack(boxes), np.stack(lms)))
    return clips
