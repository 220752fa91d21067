"""95% intervals cover the truth at least 93% of the time at the sizes reports have, by simulation (vectorised,
fixed seed): shares, paired differences, and graded scores; and the rule, which reads one bound, errs no more
than its nominal 2.5% with the truth on its bar."""

import numpy as np
import pytest

from distill.stats import exact_interval, mean_interval, paired_binary_interval, paired_difference

SIZES = (16, 48, 300)
RATES = (0.5, 0.9, 1.0)
TRIALS = 20_000


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("p", RATES)
def test_share_interval_coverage(n: int, p: float) -> None:
    successes = np.random.default_rng(n).binomial(n, p, TRIALS)
    low, high = exact_interval(successes, n)
    assert ((low <= p) & (p <= high)).mean() >= 0.93


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("student", RATES)
@pytest.mark.parametrize("teacher", RATES)
def test_paired_difference_coverage(n: int, student: float, teacher: float) -> None:
    """Pairs correlated as far as the two rates allow (answers on the same query tend to agree)."""
    rng = np.random.default_rng(n + int(100 * student) + int(10 * teacher))
    both = min(student, teacher) if 1.0 in (student, teacher) else student * teacher + 0.3 * np.sqrt(
        student * (1 - student) * teacher * (1 - teacher))
    cells = [both, student - both, teacher - both, 1 - student - teacher + both]
    counts = rng.multinomial(n, np.clip(cells, 0, 1) / np.clip(cells, 0, 1).sum(), TRIALS)
    low, high = paired_binary_interval(counts[:, 1], counts[:, 2], n)
    truth = student - teacher
    assert ((low <= truth + 1e-12) & (truth - 1e-12 <= high)).mean() >= 0.93


@pytest.mark.parametrize("n", SIZES + (1000,))
@pytest.mark.parametrize(("only_student", "only_teacher"), [(0.0, 0.02), (0.005, 0.025), (0.04, 0.06),
                                                            (0.19, 0.21)])
def test_the_rule_errs_at_most_its_nominal_rate_with_the_truth_on_the_bar(n: int, only_student: float,
                                                                         only_teacher: float) -> None:
    """With gold, the rule says distil when the lower bound of student - teacher is above -max_quality_drop
    (Evidence.passes). A student exactly 0.02 worse must pass a -0.02 bar at most 2.5% of the time (+ Monte Carlo
    noise); Bonett-Price's interval passed it 6.1% of the time at n=300 where the two rarely disagree."""
    rng = np.random.default_rng(n)
    counts = rng.multinomial(n, [only_student, only_teacher, 1 - only_student - only_teacher], 40_000)
    low, _ = paired_binary_interval(counts[:, 0], counts[:, 1], n)
    assert (low > -0.02).mean() <= 0.03


@pytest.mark.parametrize("n", SIZES + (1000,))
def test_the_agreement_rule_errs_at_most_its_nominal_rate_with_the_truth_on_the_bar(n: int) -> None:
    low, _ = exact_interval(np.random.default_rng(n).binomial(n, 0.95, TRIALS), n)
    assert (low > 0.95).mean() <= 0.025


def test_every_answer_right_is_not_a_zero_width_interval() -> None:
    low, high = mean_interval([1.0] * 16)
    assert high == 1.0 and 0.75 < low < 0.85  # the old percentile bootstrap said [1, 1]
    diff, (low, high) = paired_difference([1.0] * 16, [1.0] * 16)
    assert diff == 0.0 and low < -0.05 and high > 0.05


@pytest.mark.parametrize("n", (16, 48))
def test_graded_score_interval_coverage(n: int) -> None:
    """ROUGE-like scores (Beta-distributed, mean 0.9): the BCa bootstrap over queries."""
    rng = np.random.default_rng(n)
    trials, truth = 300, 0.9
    covered = sum(low <= truth <= high for low, high in
                  (mean_interval(rng.beta(9, 1, n).tolist(), seed=i, resamples=1000) for i in range(trials)))
    assert covered / trials >= 0.9  # 300 trials: 0.93 true coverage reads below 0.93 by chance often
