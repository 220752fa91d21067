"""The learning-curve fit: known curves give back their labels-needed figure, with an honest spread."""

from __future__ import annotations

import numpy as np
import pytest

from distill.study.fit import CurveFit, fit_curve, labels_needed, power_law, still_rising

TRUE = CurveFit(ceiling=0.9, scale=2.0, rate=0.5)
COUNTS = [250, 500, 1000, 2000]


def _points() -> list[float]:
    return [float(power_law(np.asarray(n, dtype=float), TRUE.ceiling, TRUE.scale, TRUE.rate)) for n in COUNTS]


def test_labels_for_inverts_the_curve() -> None:
    needed = TRUE.labels_for(0.85)
    assert needed == pytest.approx((2.0 / 0.05) ** 2)  # 1,600 labels
    assert TRUE.at(needed) == pytest.approx(0.85)
    assert TRUE.labels_for(0.95) is None  # above the ceiling: never reached


def test_an_exact_curve_is_recovered() -> None:
    fit = fit_curve(COUNTS, _points())
    assert fit is not None
    assert fit.ceiling == pytest.approx(0.9, abs=1e-3) and fit.rate == pytest.approx(0.5, abs=1e-2)


def test_labels_needed_spread_covers_the_truth_and_widens_with_noise() -> None:
    truth = TRUE.labels_for(0.85)
    tight = labels_needed(COUNTS, _points(), [0.002] * 4, target=0.85)
    loose = labels_needed(COUNTS, _points(), [0.02] * 4, target=0.85)
    assert tight.low <= truth <= tight.high
    assert tight.reached_share == 1.0
    # Noisier points: a lower 5th percentile, and some refits that never reach the target at all.
    assert loose.low < tight.low and loose.reached_share < tight.reached_share


def test_a_target_above_every_plausible_ceiling_is_not_reached() -> None:
    result = labels_needed(COUNTS, _points(), [0.002] * 4, target=0.99)
    assert result.median is None and result.reached_share < 0.05


def test_still_rising_needs_more_than_noise() -> None:
    assert still_rising(COUNTS, [0.5, 0.6, 0.7, 0.8], [0.02] * 4)
    assert not still_rising(COUNTS, [0.5, 0.6, 0.7, 0.71], [0.02] * 4)
    assert not still_rising([250], [0.5], [0.02])
