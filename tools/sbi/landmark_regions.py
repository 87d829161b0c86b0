"""Landmark-region contrasts as training features: ``fit_head --landmark-regions``'s third view.

The features are :class:`tools.sbi.model.LandmarkContrasts` of the colour view's frozen maps, in
the region masks of :mod:`stream_guard.faces.regions` (the masks the pipeline builds from its
face mesh): the seam just inside and outside the face-oval hull, and the mouth and the eyes
against the face core; 332 numbers per crop with the default taps.
"""
from __future__ import annotations

import numpy as np
import torch

from stream_guard.faces.regions import region_masks
from tools.sbi.model import RegionStatsEncoder


def crop_regions(landmarks: list[np.ndarray], crop_size: int, sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """The region masks ``[N, 5, s, s]`` for each of ``sizes``, of crops with these landmarks (crop pixels)."""
    return [torch.from_numpy(np.stack([region_masks(lm, crop_size, s) for lm in landmarks])) for s in sizes]


class LandmarkContrastGraph(torch.nn.Module):
    """The landmark contrasts alone (``contrast_dim`` columns) of ``encoder``, a
    :class:`RegionStatsEncoder` built with ``landmark_regions``: normalised crops and one mask
    tensor per ``encoder.region_sizes`` in, as the full encoder takes them."""

    def __init__(self, encoder: RegionStatsEncoder) -> None:
        super().__init__()
        if encoder.contrasts is None:
            raise ValueError("the encoder was built without landmark_regions")
        self.enc = encoder.eval()

    def forward(self, x: torch.Tensor, *regions: torch.Tensor) -> torch.Tensor:
        return self.enc.landmark_contrasts(x, list(regions))
