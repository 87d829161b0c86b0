"""Landmark-region contrasts: the masks (stream_guard/faces/regions.py), the contrasts
(tools/sbi/model.py), the encoder that appends them, and the self-blended draws' landmarks,
which must follow the crop (flip included)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _face_landmarks(size: int) -> np.ndarray:
    from tools.sbi.data import synthetic_landmarks
    from stream_guard.faces.regions import FACE_OVAL, LEFT_EYE, LIPS, RIGHT_EYE
    box = np.array([0.25, 0.2, 0.75, 0.8]) * size
    lms = synthetic_landmarks(box, np.random.default_rng(0))

    def ring(idx: tuple[int, ...], cx: float, cy: float, rx: float, ry: float) -> None:
        t = np.linspace(0, 2 * np.pi, len(idx), endpoint=False)
        lms[list(idx)] = np.c_[(cx + rx * np.sin(t)) * size, (cy - ry * np.cos(t)) * size]

    ring(FACE_OVAL, 0.5, 0.5, 0.25, 0.3)
    ring(LIPS, 0.5, 0.68, 0.08, 0.03)
    ring(RIGHT_EYE, 0.4, 0.42, 0.04, 0.015)
    ring(LEFT_EYE, 0.6, 0.42, 0.04, 0.015)
    return lms


def test_region_masks_are_disjoint_bands_around_the_face_oval() -> None:
    from stream_guard.faces.regions import region_masks
    from stream_guard.model.contract import REGION_NAMES
    masks = dict(zip(REGION_NAMES, region_masks(_face_landmarks(224), 224, 56)))
    assert all(m.shape == (56, 56) and m.sum() > 0 for m in masks.values()), {k: m.sum() for k, m in masks.items()}
    assert not np.any(masks["core"] * masks["seam_in"]) and not np.any(masks["seam_in"] * masks["seam_out"])
    assert not np.any(masks["core"] * (masks["mouth"] + masks["eyes"]))
    assert masks["seam_out"][28, 28] == 0 and masks["core"][28, 28] == 1  # the face centre is core
    seam_rows = np.flatnonzero(masks["seam_in"][:28, 28])  # 5 % of the map's side: 3 px at 56
    assert seam_rows.size == 3


def _contrasts(x: np.ndarray, masks: np.ndarray) -> np.ndarray:
    from tools.sbi.model import LandmarkContrasts
    with torch.no_grad():
        return LandmarkContrasts()([torch.from_numpy(x[None]).float()], [torch.from_numpy(masks[None])])[0].numpy()


def test_a_textured_band_inside_the_seam_raises_the_seam_ratio_only() -> None:
    from stream_guard.faces.regions import region_masks
    masks = region_masks(_face_landmarks(224), 224, 56)
    rng = np.random.default_rng(1)
    flat = rng.normal(0, 1, (2, 56, 56))
    textured = flat + 4 * rng.normal(0, 1, (2, 56, 56)) * masks[1]
    base, changed = (_contrasts(x, masks).reshape(4, 2) for x in (flat, textured))
    assert np.all(changed[0] > base[0] + 0.5)  # seam log std ratio
    assert np.allclose(changed[2:], base[2:], atol=1e-5)  # mouth and eyes against the core: untouched


def test_an_empty_region_gives_finite_contrasts() -> None:
    from stream_guard.faces.regions import region_masks
    masks = region_masks(_face_landmarks(224), 224, 28)
    masks[3] = 0  # no mouth (landmarks off the crop, a mesh miss)
    x = np.random.default_rng(2).normal(0, 1, (3, 28, 28))
    out = _contrasts(x, masks).reshape(4, 3)
    assert np.isfinite(out).all()
    assert np.allclose(out[2], -np.log(x[:, masks[0] > 0].std(1)), atol=1e-3)  # std 1 against the core's


def test_self_blended_draws_carry_landmarks_that_follow_the_crop() -> None:
    from dataclasses import replace

    from tools.sbi.data import SampleOptions, sample_pair, sample_pair_with_landmarks, synthetic_clips
    clip = synthetic_clips(1, seed=2)[0]
    opts = SampleOptions(size=128, margin=0.25)
    for seed in range(6):
        r0, f0 = sample_pair(clip, 4, opts, np.random.default_rng(seed))
        r1, f1, marks = sample_pair_with_landmarks(clip, 4, opts, np.random.default_rng(seed))
        assert all(np.array_equal(a, b) for a, b in zip(r0 + f0, r1 + f1))  # same draws
        assert len(marks) == 4 and all(m.shape == (468, 2) for m in marks)
    # no augmentation but a flip: the mirrored landmarks are those of the mirrored crop
    still = SampleOptions(size=128, margin=0.25, aug_strength=0.0, jitter=0.0)
    import tools.sbi.data as data
    for flip in (False, True):
        original = data.sample_aug
        data.sample_aug = lambda rng, strength=1.0, _f=flip: replace(original(rng, 0.0), flip=_f, codec="none")
        try:
            _, _, marks = sample_pair_with_landmarks(clip, 1, still, np.random.default_rng(0))
        finally:
            data.sample_aug = original
        eye_r, eye_l = marks[0][33, 0], marks[0][263, 0]  # subject's right eye is image-left unflipped
        assert (eye_r > eye_l) == flip


def test_encoder_with_landmark_regions_appends_the_contrasts_to_its_statistics() -> None:
    from tools.sbi.landmark_regions import LandmarkContrastGraph, crop_regions
    from tools.sbi.model import RegionStatsEncoder
    from tools.sbi.train import to_tensor
    torch.manual_seed(0)
    enc = RegionStatsEncoder(64, 0.25, pretrained=False, views=("colour", "greystd"), landmark_regions=True).eval()
    crops = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    marks = [_face_landmarks(64)] * 2
    assert enc.region_sizes == (64, 32, 16, 8)  # the bands' and blocks 0, 2 and 4's map sizes
    regions = crop_regions(marks, 64, enc.region_sizes)
    with torch.no_grad():
        x = to_tensor(crops, torch.device("cpu"))
        full = enc(x, *regions).numpy()
        stats = torch.cat([enc.summarise(x), enc.summarise(enc.grey_standardise(x))], 1).numpy()
        contrasts = LandmarkContrastGraph(enc)(x, *regions).numpy()
    assert contrasts.shape == (2, 4 * (3 + 16 + 24 + 40)) and np.isfinite(contrasts).all()
    assert enc.dim == full.shape[1] == 2 * 415 + 332
    assert np.allclose(full, np.concatenate([stats, contrasts], 1), atol=1e-5)
    with pytest.raises(ValueError):
        enc(x)  # the masks are required


@pytest.mark.parametrize("contrasts_only", [False, True])
def test_onnx_featuriser_matches_pytorch(contrasts_only: bool) -> None:
    """fit_head's features come from ONNX Runtime: the same numbers as the PyTorch modules, for a
    view's statistics (landmarks ignored) and for the landmark contrasts (masks built per crop)."""
    from tools.sbi.landmark_regions import LandmarkContrastGraph, crop_regions
    from tools.sbi.model import RegionStatsEncoder
    from tools.sbi.onnx_features import OnnxFeaturiser
    from tools.sbi.train import to_tensor
    torch.manual_seed(0)
    enc = RegionStatsEncoder(64, 0.25, pretrained=False, views=("greystd",) if not contrasts_only else ("colour",),
                             landmark_regions=contrasts_only).eval()
    graph = LandmarkContrastGraph(enc) if contrasts_only else enc
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    marks = [_face_landmarks(64) + rng.normal(0, 1.5, (468, 2)) for _ in range(5)]
    with torch.no_grad():
        ref = graph(to_tensor(crops, torch.device("cpu")), *crop_regions(marks, 64, enc.region_sizes)).numpy()
    got = OnnxFeaturiser(graph, 64, enc.region_sizes, chunk=2)(crops, marks)  # chunks of 2, 2 and 1
    assert got.shape == ref.shape == (5, enc.contrast_dim if contrasts_only else enc.dim)
    assert np.abs(got - ref).max() <= 1e-4
    assert not np.allclose(got[0], got[1])  # per-crop rows, not one row repeated
    with pytest.raises(ValueError, match="px"):
        OnnxFeaturiser(graph, 64, enc.region_sizes)(np.zeros((1, 32, 32, 3), np.uint8), marks[:1])
