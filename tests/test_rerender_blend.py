"""Re-rendered pseudo-fakes (tools/sbi/rerender_blend.py): where the redrawn face lands, the warp, pairs."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from stream_guard.synth.self_blend import LOWER_LIP, UPPER_LIP
from tools.sbi.data import SampleOptions, sample_rerender_pair_with_landmarks, synthetic_clips
from tools.sbi.rerender_blend import RerenderBlend, rerender_frame, sample_rerender_blend


def _params(seed: int = 0, **changes) -> RerenderBlend:
    """Drawn parameters, with ``changes``; full-strength mask."""
    p = sample_rerender_blend(np.random.default_rng(seed))
    return replace(p, mask=replace(p.mask, ratio=1.0), **changes)


def _face():
    clip = synthetic_clips(1)[0]
    return clip.frames[0], clip.landmarks[0]


def test_the_redrawn_layer_lands_inside_the_mask_only() -> None:
    crop, lms = _face()
    for box in (False, True):
        fake, mask = rerender_frame(crop, lms, _params(box=box, scale=0.4), 2, np.random.default_rng(0))
        assert np.array_equal(fake[mask == 0], crop[mask == 0])
        inside = mask > 0.99
        assert inside.mean() > 0.05
        assert np.abs(fake[inside].astype(float) - crop[inside].astype(float)).mean() > 1.0


def test_without_warp_resampling_smoothing_or_drift_the_face_is_unchanged() -> None:
    crop, lms = _face()
    still = _params(warp_amp=0.0, scale=1.0, smooth=0.0, gain=(1.0, 1.0, 1.0))
    fake, _ = rerender_frame(crop, lms, still, 5)
    assert np.abs(fake.astype(int) - crop.astype(int)).max() <= 1


def test_the_motion_field_moves_the_mouth_more_than_the_forehead_and_changes_per_frame() -> None:
    crop, lms = _face()
    moving = _params(warp_amp=0.08, warp_reach=0.3, scale=1.0, smooth=0.0, gain=(1.0, 1.0, 1.0), box=True,
                     box_scale=1.4)
    a, _ = rerender_frame(crop, lms, moving, 0)
    b, _ = rerender_frame(crop, lms, moving, 3)
    change = np.abs(a.astype(float) - b.astype(float)).mean(2)
    mouth = ((lms[UPPER_LIP] + lms[LOWER_LIP]) / 2).astype(int)
    top = lms[:, 1].min().astype(int)
    near = change[mouth[1] - 10:mouth[1] + 10, mouth[0] - 10:mouth[0] + 10].mean()
    far = change[max(top - 10, 0):top + 10, mouth[0] - 10:mouth[0] + 10].mean()
    assert near > 1.0 and near > 3 * far, (near, far)


def test_rerender_pairs_share_crop_and_augmentation_and_differ_in_the_face() -> None:
    clip = synthetic_clips(2)[1]  # a 12-frame "video"
    opts = SampleOptions(size=96, margin=0.25, aug_strength=0.0, jitter=0.0)
    reals, fakes, marks = sample_rerender_pair_with_landmarks(clip, 4, opts, np.random.default_rng(3))
    assert len(reals) == len(fakes) == len(marks) == 4
    assert all(r.shape == f.shape == (96, 96, 3) for r, f in zip(reals, fakes))
    assert min(np.abs(r.astype(float) - f.astype(float)).mean() for r, f in zip(reals, fakes)) > 0.5
