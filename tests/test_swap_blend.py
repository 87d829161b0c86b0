"""Face-swap pseudo-fakes (tools/sbi/swap_blend.py): alignment, where the other face lands, source choice."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from stream_guard.synth.self_blend import sample_clip_blend
from tools.sbi.data import SampleOptions, sample_swap_pair_with_landmarks, source_key, synthetic_clips
from tools.sbi.swap_blend import ShapeIndex, SwapBlend, colour_transfer, swap_frame


def _plain_swap(seed: int = 0) -> SwapBlend:
    """Whole face, full strength, no colour transfer and no alteration: the pasted face as it is."""
    blend = replace(sample_clip_blend(np.random.default_rng(seed)), region="full", ratio=1.0)
    return SwapBlend(blend, transfer=0.0, alter_source=False)


def test_a_face_swapped_with_a_moved_copy_of_itself_is_put_back_in_place() -> None:
    """The similarity transform between the meshes undoes a known rotation, scale and shift."""
    clip = synthetic_clips(1)[0]
    target, lms = clip.frames[0], clip.landmarks[0]
    h, w = target.shape[:2]
    moved = cv2.getRotationMatrix2D((w / 2, h / 2), 12.0, 0.8)
    moved[:, 2] += (15.0, -10.0)
    source = cv2.warpAffine(target, moved, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    source_lms = lms @ moved[:, :2].T + moved[:, 2]
    fake, mask = swap_frame(target, lms, source, source_lms, _plain_swap())
    inside = mask > 0.99
    assert inside.mean() > 0.05
    err = np.abs(fake.astype(float) - target.astype(float))[inside].mean()
    assert err < 6.0, err  # resampled twice, otherwise the same pixels


def test_the_other_face_lands_inside_the_mask_only() -> None:
    clip = synthetic_clips(1)[0]
    target, lms = clip.frames[0], clip.landmarks[0]
    source = 255 - target  # another "person": every pixel differs
    fake, mask = swap_frame(target, lms, source, lms, _plain_swap(), np.random.default_rng(0))
    assert np.array_equal(fake[mask == 0], target[mask == 0])
    full = mask > 0.99
    assert np.abs(fake[full].astype(float) - source[full].astype(float)).mean() < 2.0


def test_colour_transfer_moves_the_source_towards_the_target_statistics() -> None:
    rng = np.random.default_rng(0)
    src = np.clip(rng.normal(0.3, 0.05, (64, 64, 3)), 0, 1).astype(np.float32)
    dst = np.clip(rng.normal(0.7, 0.1, (64, 64, 3)), 0, 1).astype(np.float32)
    mask = np.ones((64, 64), np.float32)
    lab = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2LAB).reshape(-1, 3).mean(0)  # noqa: E731
    full, half = colour_transfer(src, dst, mask, 1.0), colour_transfer(src, dst, mask, 0.5)
    np.testing.assert_allclose(lab(full), lab(dst), atol=1.0)
    assert np.linalg.norm(lab(half) - lab(dst)) < np.linalg.norm(lab(src) - lab(dst)) / 2 + 1.0
    assert colour_transfer(src, dst, mask, 0.0) is src


def test_shape_index_never_picks_a_face_of_the_same_file() -> None:
    clips = synthetic_clips(4)
    index = ShapeIndex(clips, source_key)
    rng = np.random.default_rng(0)
    for clip in clips:
        picks = {index.nearest(clip.landmarks[0], source_key(clip), rng).file for _ in range(20)}
        assert clip.file not in picks and picks
    alone = ShapeIndex(clips[:1], source_key)
    assert alone.nearest(clips[0].landmarks[0], source_key(clips[0]), rng) is None


def test_swap_pairs_share_crop_and_augmentation_and_differ_in_the_face() -> None:
    clips = synthetic_clips(4)
    clips[1] = replace(clips[1], frames=255 - clips[1].frames)  # make the other faces look different
    clips[3] = replace(clips[3], frames=255 - clips[3].frames)
    index = ShapeIndex(clips, source_key)
    opts = SampleOptions(size=96, margin=0.25, aug_strength=0.0, jitter=0.0)
    reals, fakes, marks = sample_swap_pair_with_landmarks(clips[0], index, 4, opts, np.random.default_rng(2))
    assert len(reals) == len(fakes) == len(marks) == 4
    assert all(r.shape == f.shape == (96, 96, 3) for r, f in zip(reals, fakes))
    diff = [np.abs(r.astype(float) - f.astype(float)).mean() for r, f in zip(reals, fakes)]
    assert min(diff) > 2.0
    assert np.array_equal(reals[0][:4], fakes[0][:4])  # the crop's top rows are outside the face


def test_sample_swap_pair_needs_another_file() -> None:
    clips = synthetic_clips(1)
    with pytest.raises(ValueError, match="another file"):
        sample_swap_pair_with_landmarks(clips[0], ShapeIndex(clips, source_key), 4, SampleOptions(size=64),
                                        np.random.default_rng(0))
