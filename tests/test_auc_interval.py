"""The AUC's bootstrap interval that ``stream-guard evaluate`` reports beside every AUC."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from stream_guard.scoring import auc_interval, metrics


def _labels_scores(rng: np.random.Generator, n_real: int, n_fake: int, shift: float) -> tuple[list[int], list[float]]:
    scores = np.r_[rng.normal(size=n_real), rng.normal(shift, size=n_fake)]
    return [0] * n_real + [1] * n_fake, scores.tolist()


def _pairwise_auc(reals: np.ndarray, fakes: np.ndarray) -> float:
    """The share of (real, fake) pairs the fake wins, ties half."""
    return float(np.mean((fakes[:, None] > reals[None, :]) + 0.5 * (fakes[:, None] == reals[None, :])))


def test_matches_a_plain_stratified_bootstrap() -> None:
    rng = np.random.default_rng(1)
    labels, scores = _labels_scores(rng, 30, 46, 1.2)
    low, high = auc_interval(labels, scores, resamples=4000)
    y, s = np.asarray(labels), np.asarray(scores)
    reals, fakes = s[y == 0], s[y == 1]
    plain = [_pairwise_auc(rng.choice(reals, len(reals)), rng.choice(fakes, len(fakes))) for _ in range(4000)]
    want_low, want_high = np.percentile(plain, [2.5, 97.5])
    assert low == pytest.approx(want_low, abs=0.01) and high == pytest.approx(want_high, abs=0.01)
    assert low < roc_auc_score(y, s) < high
    assert auc_interval(labels, scores, resamples=4000) == [low, high]  # fixed seed: same report every run


def test_covers_the_true_auc_about_as_often_as_it_claims() -> None:
    """Normal reals and fakes shifted by d have the true AUC Phi(d / sqrt 2)."""
    rng = np.random.default_rng(7)
    shift = 1.0
    truth = norm.cdf(shift / np.sqrt(2))
    trials = 200
    covered = sum(low <= truth <= high for low, high in
                  (auc_interval(*_labels_scores(rng, 25, 35, shift), resamples=1000, seed=i) for i in range(trials)))
    assert 0.88 <= covered / trials <= 0.99, covered


def test_narrows_with_more_files() -> None:
    rng = np.random.default_rng(3)
    widths = []
    for n in (10, 40, 160):
        low, high = auc_interval(*_labels_scores(rng, n, n, 1.0))
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]


def test_one_label_one_file_and_separated_cases() -> None:
    assert auc_interval([0, 0], [0.1, 0.2]) is None and auc_interval([1], [0.3]) is None
    assert auc_interval([0, 1], [0.2, 0.3]) == [1.0, 1.0]
    assert auc_interval([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]) == [1.0, 1.0]
    # one real: only the fakes vary; it sits above one fake of four, so resamples range over 0-1 of that
    low, high = auc_interval([0, 1, 1, 1, 1], [0.5, 0.4, 0.6, 0.7, 0.8])
    assert low < 0.75 < high and 0.0 <= low and high == 1.0
    assert "auc_ci" not in metrics([0, 1], [0.1, 0.9], 0.5)
    assert metrics([0, 1], [0.1, 0.9], 0.5, ci_resamples=100)["auc_ci"] == [1.0, 1.0]
