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
from tools.sbi.train import to_tensor


def crop_regions(landmarks: list[np.ndarray], crop_size: int, sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """The region masks ``[N, 5, s, s]`` for each of ``sizes``, of crops with these landmarks (crop pixels)."""
    return [torch.from_numpy(np.stack([region_masks(lm, crop_size, s) for lm in landmarks])) for s in sizes]


class LandmarkRegionFeatures:
    """``(crops uint8 [N, S, S, 3], landmarks)`` -> the encoder's landmark contrasts ``[N, contrast_dim]``
    (``encoder``: a :class:`RegionStatsEncoder` built with ``landmark_regions``)."""

    def __init__(self, encoder: RegionStatsEncoder, chunk: int = 32) -> None:
        if encoder.contrasts is None:
            raise ValueError("the encoder was built without landmark_regions")
        self.enc, self.chunk = encoder.eval(), chunk

    def __call__(self, crops: np.ndarray, landmarks: list[np.ndarray]) -> np.ndarray:
        size, out = crops.shape[1], []
        with torch.no_grad():
            for i in range(0, len(crops), self.chunk):
                x = to_tensor(crops[i:i + self.chunk], torch.device("cpu"))
                masks = crop_regions(landmarks[i:i + self.chunk], size, self.enc.region_sizes)
                out.append(self.enc.landmark_contrasts(x, masks))
        return torch.cat(out).numpy().astype(np.float32)
