"""SSD anchor centres for MediaPipe's BlazeFace face detectors.

MediaPipe configures its ``SsdAnchorsCalculator`` for face detection with
``fixed_anchor_size: true`` (every anchor is 1.0 x 1.0, so the model's box sizes are
plain fractions of the input), ``anchor_offset 0.5`` and one aspect ratio (1.0):

* short range, 128 x 128 input: strides 8, 16, 16, 16 with one interpolated anchor per
  layer (``interpolated_scale_aspect_ratio 1.0``). Consecutive layers with the same stride
  share one grid, so: 16 x 16 cells x 2 anchors + 8 x 8 cells x 6 anchors = 896;
* full range, 192 x 192 input: one layer of stride 4, no interpolated anchor
  (``interpolated_scale_aspect_ratio 0.0``): 48 x 48 cells x 1 anchor = 2304.

Anchors are listed layer by layer, row by row, column by column, then anchor by anchor,
the order in which the model emits its predictions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class AnchorSpec:
    """The part of MediaPipe's SSD anchor options that decides the anchor centres."""

    input_size: int
    strides: tuple[int, ...]
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    anchor_offset: float = 0.5


SHORT_RANGE = AnchorSpec(input_size=128, strides=(8, 16, 16, 16), interpolated_scale_aspect_ratio=1.0)
FULL_RANGE = AnchorSpec(input_size=192, strides=(4,), interpolated_scale_aspect_ratio=0.0)


def _anchors_per_layer(spec: AnchorSpec) -> int:
    """Anchors one layer adds to each grid cell."""
    return len(spec.aspect_ratios) + (1 if spec.interpolated_scale_aspect_ratio > 0.0 else 0)


def _stride_groups(strides: tuple[int, ...]) -> list[tuple[int, int]]:
    """Runs of equal consecutive strides as ``(stride, number_of_layers)``."""
    groups: list[tuple[int, int]] = []
    for stride in strides:
        if groups and groups[-1][0] == stride:
            groups[-1] = (stride, groups[-1][1] + 1)
        else:
            groups.append((stride, 1))
    return groups


def anchor_centers(spec: AnchorSpec) -> np.ndarray:
    """``(N, 2)`` float32 anchor centres ``[x, y]`` in [0, 1] of the model input."""
    per_layer = _anchors_per_layer(spec)
    parts = []
    for stride, layers in _stride_groups(spec.strides):
        cells = math.ceil(spec.input_size / stride)
        coords = (np.arange(cells, dtype=np.float64) + spec.anchor_offset) / cells
        ys, xs = np.meshgrid(coords, coords, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        parts.append(np.repeat(grid, per_layer * layers, axis=0))
    return np.concatenate(parts).astype(np.float32)
