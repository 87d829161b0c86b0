"""From noisy per-window probabilities to a stable verdict per face."""
from __future__ import annotations

from dataclasses import dataclass

from stream_guard.types import Verdict


@dataclass(frozen=True, slots=True)
class SmoothingOptions:
    """``alpha``: weight of the newest probability in the moving average.
    ``margin``: half-width of the hysteresis band around the threshold.
    ``min_samples``: windows scored before any verdict other than uncertain."""

    alpha: float = 0.3
    margin: float = 0.1
    min_samples: int = 3


class VerdictSmoother:
    """Exponential moving average plus hysteresis: the verdict turns fake only above
    ``threshold + margin`` and back to real only below ``threshold - margin``, so noise
    around the threshold does not flip it."""

    def __init__(self, threshold: float, options: SmoothingOptions = SmoothingOptions()) -> None:
        self.threshold = threshold
        self.options = options
        self.score: float | None = None
        self.verdict = Verdict.UNCERTAIN
        self.samples = 0

    def update(self, probability: float) -> bool:
        """Add one probability; return True if the verdict changed."""
        a = self.options.alpha
        self.score = probability if self.score is None else a * probability + (1 - a) * self.score
        self.samples += 1
        if self.samples < self.options.min_samples:
            return False
        upper = min(1.0, self.threshold + self.options.margin)
        lower = max(0.0, self.threshold - self.options.margin)
        new = self.verdict
        if self.score >= upper:
            new = Verdict.FAKE
        elif self.score <= lower:
            new = Verdict.REAL
        changed = new is not self.verdict
        self.verdict = new
        return changed
