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


def _rule_passes(diff: float, discordant: float, queries: int, trials: int = 20_000) -> float:
    """How often the rule (lower bound of the paired difference above -0.02) passes for a true difference."""
    from distill.stats import paired_binary_interval

    counts = np.random.default_rng(1).multinomial(
        queries, [(discordant + diff) / 2, (discordant - diff) / 2, 1 - discordant], trials)
    return float((paired_binary_interval(counts[:, 0], counts[:, 1], queries)[0] > -0.02).mean())


def test_labels_needed_make_the_rule_pass_with_the_stated_power() -> None:
    """A student whose paired difference follows a known curve, measured on 300 test queries: at the labels
    needed the rule passes about 80% of the time; where the fitted mean only meets the bar, about 2%."""
    from distill.study.fit import labels_for_power

    truth = CurveFit(ceiling=0.56, scale=2.0, rate=0.5)  # (1 + difference) / 2: the difference rises to +0.12
    discordant, queries = 0.15, 300

    def difference(n: float) -> float:
        return 2 * truth.at(n) - 1

    sd = float(np.sqrt(discordant - difference(2000) ** 2))
    values = [difference(n) for n in COUNTS]
    needed = labels_for_power(COUNTS, values, [sd / np.sqrt(queries)] * 4, -0.02, sd, queries)
    assert needed.median is not None and needed.low <= needed.median <= (needed.high or np.inf)
    assert 0.7 <= _rule_passes(difference(needed.median), discordant, queries) <= 0.9
    on_the_bar = labels_needed(COUNTS, [(1 + v) / 2 for v in values], [0.01] * 4, (1 - 0.02) / 2).median
    assert _rule_passes(difference(on_the_bar), discordant, queries) < 0.05
