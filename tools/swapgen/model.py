"""The swapping autoencoder and the swapper that runs a trained one on face crops."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from tools.swapgen.align import align_matrix, warp_to_template

FORMAT = "stream_guard-swapgen/1"


def _upscale(c_in: int, c_out: int) -> nn.Sequential:
    """x2 upscale: a 3x3 conv to 4x the channels, then pixel shuffle."""
    return nn.Sequential(nn.Conv2d(c_in, c_out * 4, 3, padding=1), nn.LeakyReLU(0.1), nn.PixelShuffle(2))


class SwapAutoencoder(nn.Module):
    """``[N, 3, S, S]`` aligned faces in [0, 1] -> the same faces drawn by one identity's decoder.

    One encoder and a dense bottleneck shared by every face; one decoder per identity (the last
    one usually for "everyone else", which keeps the shared code general). ``size`` must be a
    multiple of 16.
    """

    def __init__(self, identities: int, size: int = 64, width: int = 32, latent: int = 256) -> None:
        super().__init__()
        if size % 16:
            raise ValueError(f"size must be a multiple of 16, got {size}")
        self.config = {"identities": identities, "size": size, "width": width, "latent": latent}
        c = [3, width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = []
        for i in range(4):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(c[i], c[i + 1], k, 2, k // 2), nn.LeakyReLU(0.1)]
        self.encoder = nn.Sequential(*layers)
        self.grid = size // 16
        self.code_channels = width * 4
        self.bottleneck = nn.Sequential(nn.Flatten(), nn.Linear(c[4] * self.grid ** 2, latent),
                                        nn.Linear(latent, self.code_channels * self.grid ** 2))
        self.shared_up = _upscale(self.code_channels, self.code_channels)
        self.decoders = nn.ModuleList(
            nn.Sequential(_upscale(width * 4, width * 4), _upscale(width * 4, width * 2), _upscale(width * 2, width),
                          nn.Conv2d(width, 3, 3, padding=1), nn.Sigmoid())
            for _ in range(identities))

    def code(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bottleneck(self.encoder(x)).view(-1, self.code_channels, self.grid, self.grid)
        return self.shared_up(z)

    def forward(self, x: torch.Tensor, identity: int) -> torch.Tensor:
        return self.decoders[identity](self.code(x))


def save_generator(path: Path, model: SwapAutoencoder, template: np.ndarray, identities: Sequence[str]) -> int:
    """Write the trained generator (weights as float16, computed in float32 at load); returns its bytes."""
    state = {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "config": model.config, "template": np.asarray(template, np.float64),
                "identities": list(identities), "state": state}, path)
    return Path(path).stat().st_size


class FaceSwapper:
    """A trained generator applied to face crops: align, redraw as an identity, warp back."""

    def __init__(self, model: SwapAutoencoder, template: np.ndarray, identities: Sequence[str]) -> None:
        self.model = model.eval()
        self.template = template
        self.identities = list(identities)  # the decoders' source files; the last is "everyone else"
        self.size = model.config["size"]

    @classmethod
    def load(cls, path: str | Path) -> FaceSwapper:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        if ck.get("format") != FORMAT:
            raise ValueError(f"{path} is not a stream_guard swap generator (format {ck.get('format')!r})")
        model = SwapAutoencoder(**ck["config"])
        model.load_state_dict({k: v.float() for k, v in ck["state"].items()})
        return cls(model, ck["template"], ck["identities"])

    def target_identity(self, source_file: str, rng: np.random.Generator) -> int:
        """A decoder to swap a face of ``source_file`` into: any named identity but its own."""
        choices = [i for i, f in enumerate(self.identities[:-1]) if f != source_file]
        if not choices:
            raise ValueError("the generator has no identity other than this face's own")
        return int(rng.choice(choices))

    def swap(self, crop: np.ndarray, landmarks: np.ndarray, identity: int) -> np.ndarray:
        """``crop`` (uint8 RGB) with its face redrawn as ``identity``, in the crop's own geometry;
        outside the aligned square the crop's border is reflected (the blend mask keeps only the face)."""
        m = align_matrix(landmarks, self.template)
        aligned = warp_to_template(crop, m, self.size)
        with torch.no_grad():
            x = torch.from_numpy(aligned).permute(2, 0, 1)[None].float() / 255.0
            y = self.model(x, identity)[0].permute(1, 2, 0).numpy()
        drawn = np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return cv2.warpAffine(drawn, m, crop.shape[1::-1], flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT)
