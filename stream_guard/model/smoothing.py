"""From noisy per-window probabilities to a stable verdict per face."""
from __future__ import annotations

import math
from dataclasses import dataclass

from stream_guard.types import Verdict


@dataclass(frozen=True, slots=True)
class SmoothingOptions:
    """``alpha``: weight of the newest probability in the moving average.
    ``margin_logit``: half-width of the hysteresis band around the threshold, in log-odds (the
    default makes it 0.40-0.60 around a threshold of 0.5, 0.74-0.86 around one of 0.807): the
    same weight of evidence either side, however close the threshold is to 0 or 1.
    ``min_samples``: windows scored before any verdict other than uncertain."""

    alpha: float = 0.3
    margin_logit: float = math.log(0.6 / 0.4)
    min_samples: int = 3


class VerdictSmoother:
    """Exponential moving average plus hysteresis: the verdict turns fake only above the
    band's upper edge and back to real only below its lower edge (the threshold moved by
    ``margin_logit`` in log-odds either way), so noise around the threshold does not flip it."""

    def __init__(self, threshold: float, options: SmoothingOptions = SmoothingOptions()) -> None:
        self.threshold = threshold
        self.options = options
        self.score: float | None = None
        self.verdict = Verdict.UNCERTAIN
        self.samples = 0
        t = min(max(threshold, 1e-6), 1.0 - 1e-6)
        centre = math.log(t / (1.0 - t))
        self.lower, self.upper = (1.0 / (1.0 + math.exp(-(centre + d))) for d in (-options.margin_logit,
                                                                                  options.margin_logit))

    def update(self, probability: float) -> bool:
        """Add one probability; return True if the verdict changed."""
        a = self.options.alpha
        self.score = probability if self.score is None else a * probability + (1 - a) * self.score
        self.samples += 1
        if self.samples < self.options.min_samples:
            return False
        new = self.verdict
        if self.score >= self.upper:
            new = Verdict.FAKE
        elif self.score <= self.lower:
            new = Verdict.REAL
        changed = new is not self.verdict
        self.verdict = new
        return changed
