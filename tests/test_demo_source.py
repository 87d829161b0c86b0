"""The embedded demo source and the self-blending it relies on."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from stream_guard.sources.base import FrameSource
from stream_guard.sources.demo import DemoSource
from stream_guard.synth import blend_face, sample_clip_blend


@pytest.fixture(scope="module")
def demo() -> DemoSource:
    source = DemoSource(seconds=2.0, fps=30.0)
    source.open()
    return source


def test_stream_info_and_frames() -> None:
    source = DemoSource(seconds=1.0, fps=12.0, width=640, height=360)
    assert isinstance(source, FrameSource)
    with source:
        info = source.open()
        frames = list(source.frames())
    assert (info.source_id, info.width, info.height, info.fps) == ("demo", 640, 360, 12.0)
    assert info.frame_count == 12 and not info.is_live
    assert [f.index for f in frames] == list(range(12))
    assert [f.pts_s for f in frames] == pytest.approx([i / 12.0 for i in range(12)])
    wall = [f.wallclock_s for f in frames]
    assert wall == sorted(wall)
    for f in frames:
        assert f.image.shape == (360, 640, 3) and f.image.dtype == np.uint8
        assert f.source_id == "demo"


def test_frames_are_deterministic_per_seed(demo: DemoSource) -> None:
    again = DemoSource(seconds=2.0, fps=30.0, seed=0)
    other = DemoSource(seconds=2.0, fps=30.0, seed=1)
    streamed = [f.image for _, f in zip(range(3), again.frames())]
    for index in range(3):
        assert np.array_equal(demo.render(index), streamed[index])
    assert not np.array_equal(demo.render(5), other.render(5))
    assert not np.array_equal(demo.render(0), demo.render(20)), "the face should move"


def test_face_size_and_motion(demo: DemoSource) -> None:
    boxes = np.stack([demo.ground_truth(i).boxes for i in range(0, demo.frame_count, 5)])
    heights = boxes[:, :, 3] - boxes[:, :, 1]
    assert heights.min() >= 150 and heights.max() <= 250
    assert np.ptp(boxes[:, 0, 0]) > 5, "the head should sway"
    assert np.allclose(boxes[:, 1, 0] - boxes[:, 0, 0], 640), "both panels share one motion"


@pytest.mark.parametrize("index", [0, 17, 45])
def test_panels_differ_only_around_the_right_face(demo: DemoSource, index: int) -> None:
    image = demo.render(index).astype(np.int16)
    half = demo.width // 2
    band = demo.height - demo.label_band_px
    left, right = image[:band, :half], image[:band, half:]
    changed = np.abs(left - right).max(axis=2) > 0

    x1, y1, x2, y2 = demo.ground_truth(index).boxes[1] - np.array([half, 0, half, 0])
    pad = 0.2 * max(x2 - x1, y2 - y1)
    near = np.zeros_like(changed)
    near[int(y1 - pad) : int(y2 + pad) + 1, int(x1 - pad) : int(x2 + pad) + 1] = True
    assert not changed[~near].any(), "pixels away from the right face must be identical"

    face = (slice(int(y1), int(y2)), slice(int(x1), int(x2)))
    assert changed[face].mean() > 0.5, "most of the face should be altered"
    assert np.abs(left - right)[face].mean() > 3.0, "the alteration should be visible"


def test_unpaced_generation_is_fast() -> None:
    source = DemoSource(seconds=2.0, fps=30.0)
    source.open()  # the one-off blend is not part of the per-frame cost
    start = time.perf_counter()
    count = sum(1 for _ in source.frames())
    elapsed = time.perf_counter() - start
    assert count == 60
    assert elapsed < 1.0, f"{count / elapsed:.0f} frames/s, expected far faster than real time"


def test_realtime_paces_to_the_wall_clock() -> None:
    source = DemoSource(seconds=0.25, fps=20.0, width=320, height=180, realtime=True)
    start = time.monotonic()
    frames = list(source.frames())
    assert len(frames) == 5
    assert time.monotonic() - start >= 4 / 20.0 - 0.01
    assert frames[-1].wallclock_s - frames[0].wallclock_s >= 4 / 20.0 - 0.01


def test_close_stops_the_stream() -> None:
    source = DemoSource(seconds=2.0, fps=30.0, width=320, height=180)
    seen = []
    for frame in source.frames():
        seen.append(frame.index)
        if frame.index == 2:
            source.close()
    assert seen == [0, 1, 2]


# --- self-blending ---------------------------------------------------------------


def _disc_face(size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image and a 20-point elliptic face outline centred in it."""
    rng = np.random.default_rng(7)
    image = rng.integers(60, 200, (size, size, 3), dtype=np.uint8)
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    outline = np.stack([80 + 35 * np.cos(angles), 80 + 45 * np.sin(angles)], axis=1)
    return image, outline


def test_blend_face_is_local_and_reproducible() -> None:
    image, outline = _disc_face()
    params = dataclasses.replace(sample_clip_blend(np.random.default_rng(3)), alter_source=True, ratio=1.0,
                                 freq="none")
    out, soft = blend_face(image, outline, 70.0, params)
    again, _ = blend_face(image, outline, 70.0, params)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert soft.shape == image.shape[:2] and soft.dtype == np.float32
    assert 0.0 <= soft.min() and 0.9 < soft.max() <= 1.0 + 1e-6
    assert np.array_equal(out, again), "without rng the blend is a pure function"
    assert np.array_equal(out[soft == 0], image[soft == 0]), "outside the mask the target is the real image"
    assert np.abs(out.astype(int) - image)[soft > 0.9].mean() > 1.0
    assert soft[80, 80] > 0.9 and soft[5, 5] == 0.0 and soft[80, 125] == 0.0  # the hull, not the frame


def test_per_frame_jitter_keeps_the_clip_blend() -> None:
    image, outline = _disc_face()
    rng = np.random.default_rng(0)
    drawn = [sample_clip_blend(rng) for _ in range(20)]
    assert len({p.elastic_seed for p in drawn}) == 20
    assert {p.alter_source for p in drawn} == {True, False}
    params = dataclasses.replace(drawn[0], ratio=1.0)
    _, mask_a = blend_face(image, outline, 70.0, params, np.random.default_rng(1))
    _, mask_b = blend_face(image, outline, 70.0, params, np.random.default_rng(2))
    assert not np.array_equal(mask_a, mask_b), "frames of a clip differ a little"
    overlap = np.minimum(mask_a, mask_b).sum() / np.maximum(mask_a, mask_b).sum()
    assert overlap > 0.9, "but keep one seam"


def test_blend_face_rejects_bad_inputs() -> None:
    image, outline = _disc_face()
    params = sample_clip_blend(np.random.default_rng(0))
    with pytest.raises(ValueError):
        blend_face(image.astype(np.float32), outline, 70.0, params)
    with pytest.raises(ValueError):
        blend_face(image[..., :2], outline, 70.0, params)
    with pytest.raises(ValueError):
        blend_face(image, outline[:2], 70.0, params)
