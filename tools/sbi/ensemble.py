"""Join the fitted region-statistics classifier with an end-to-end fine-tuned CNN
(:mod:`tools.sbi.finetune_cv`) into one model of the contract.

Each part's clip logits are standardised (mean and spread of its out-of-fold logits) and
mixed ``(1 - w) * region + w * cnn``. The mix is linear, so it folds into one graph pair:
the encoder emits the 415 region statistics plus the CNN's frame logit, and the temporal
head's frame layer weighs them; a clip's logit stays the mean of its frame logits.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tools.sbi.model import Encoder, RegionStatsEncoder, TemporalHead, load_checkpoint


@dataclass(frozen=True)
class ScoreMix:
    """``(1 - weight) * (a - mean_a) / std_a + weight * (b - mean_b) / std_b``."""

    weight: float
    mean_a: float
    std_a: float
    mean_b: float
    std_b: float

    @classmethod
    def fit(cls, a: dict[str, float], b: dict[str, float], weight: float) -> ScoreMix:
        files = sorted(a)
        za, zb = np.array([a[f] for f in files]), np.array([b[f] for f in files])
        return cls(weight, float(za.mean()), float(za.std()), float(zb.mean()), float(zb.std()))

    def __call__(self, a: float, b: float) -> float:
        return (1 - self.weight) * (a - self.mean_a) / self.std_a + self.weight * (b - self.mean_b) / self.std_b


def load_oof(path: Path, folds: list[set[str]]) -> dict[str, float]:
    """Out-of-fold logits of ``finetune_cv``; raises ValueError unless its folds are exactly ``folds``
    (a file scored by a model that trained on the other part's test clips would leak)."""
    oof = json.loads(Path(path).read_text())
    theirs = {}
    for f, v in oof.items():
        theirs.setdefault(v["fold"], set()).add(f)
    if sorted(map(sorted, theirs.values())) != sorted(map(sorted, folds)):
        raise ValueError(f"{path}: its folds differ from this run's (same --folds, seed and files needed)")
    return {f: float(v["logit"]) for f, v in oof.items()}


class EnsembleEncoder(nn.Module):
    """``[N, 3, S, S] -> [N, stats.dim + 1]``: region statistics and the CNN's frame logit."""

    def __init__(self, stats: RegionStatsEncoder, cnn: Encoder, frame: nn.Linear) -> None:
        super().__init__()
        self.stats, self.cnn, self.frame = stats, cnn, frame
        self.dim = stats.dim + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.stats(x), self.frame(self.cnn(x))], 1)


def ensemble(stats: RegionStatsEncoder, weights: np.ndarray, bias: float, cnn_checkpoint: Path,
             mix: ScoreMix, size: int, margin: float) -> tuple[EnsembleEncoder, TemporalHead]:
    """The joined encoder and a temporal head whose frame logit is ``mix`` of the two parts'
    (``weights``/``bias``: the region classifier on raw statistics). The CNN must have been
    trained on crops of the same ``size`` and ``margin``."""
    cnn, cnn_head, state = load_checkpoint(str(cnn_checkpoint))
    cfg = state["config"]
    if cfg.get("arch", "lite0") != "lite0":
        raise ValueError(f"{cnn_checkpoint}: only --arch lite0 checkpoints can be joined")
    if int(cfg["size"]) != size or abs(float(cfg["margin"]) - margin) > 1e-9:
        raise ValueError(f"{cnn_checkpoint}: trained on {cfg['size']} px crops at margin {cfg['margin']}, "
                         f"not {size} px at {margin}")
    enc = EnsembleEncoder(stats, cnn, cnn_head.frame).eval()
    wa, wb = (1 - mix.weight) / mix.std_a, mix.weight / mix.std_b
    torch.manual_seed(0)  # the unused GRU weights: same bytes on every run
    head = TemporalHead(dim=enc.dim).eval()
    with torch.no_grad():
        head.frame.weight.copy_(torch.from_numpy(np.append(wa * weights, wb).astype(np.float32))[None])
        head.frame.bias.fill_(wa * (bias - mix.mean_a) - wb * mix.mean_b)
    return enc, head
