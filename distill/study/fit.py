"""Learning curves: how a student's quality grows with the number of teacher labels, and how many labels a
target needs.

The curve is a saturating power law, quality(n) = ceiling - scale * n^(-rate), fitted by least squares
(scipy.optimize.curve_fit). Its uncertainty comes from a parametric bootstrap over the measured points: each
point is redrawn within its own standard error and the curve refitted, so the labels-needed figure is given
as a median and a 90% range, or as "not reached" when the fitted ceiling stays below the target.

The target is where the decision rule would say `distil` with a stated probability (80% by default), not where
the fitted mean sits on the bar (there the rule passes about 2% of the time): the rule asks the lower 95% bound to
clear the bar, so on m test queries the mean must stand (z_0.975 + z_power) x sd / sqrt(m) above it. With gold the
curve is fitted to the paired difference (student - teacher, same test queries), whose intervals already carry
the teacher's own uncertainty and the pairing.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 200
MAX_LABELS = 10_000_000  # beyond this a target counts as not reached: no study extrapolates that far


def power_law(n: np.ndarray, ceiling: float, scale: float, rate: float) -> np.ndarray:
    return ceiling - scale * np.power(n, -rate)


@dataclass(frozen=True)
class CurveFit:
    ceiling: float
    scale: float
    rate: float

    def at(self, n: float) -> float:
        return float(power_law(np.asarray(n, dtype=float), self.ceiling, self.scale, self.rate))

    def labels_for(self, target: float) -> float | None:
        """Labels where the fitted curve reaches `target`; None if it never does within MAX_LABELS."""
        if self.ceiling <= target or self.scale <= 0 or self.rate <= 0:
            return None
        needed = (self.scale / (self.ceiling - target)) ** (1 / self.rate)
        return float(needed) if needed <= MAX_LABELS else None


def fit_curve(counts: Sequence[float], quality: Sequence[float]) -> CurveFit | None:
    """The power law through (labels, quality); None with fewer than three points or when the fit fails."""
    from scipy.optimize import OptimizeWarning, curve_fit

    n, y = np.asarray(counts, dtype=float), np.asarray(quality, dtype=float)
    if n.size < 3:
        return None
    start = (min(1.0, y.max() + 0.05), max(1e-3, (y.max() - y.min()) * n.min() ** 0.5), 0.5)
    try:
        with warnings.catch_warnings():  # three or four points leave the covariance undefined; it is not used
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(power_law, n, y, p0=start, bounds=([0.0, 0.0, 0.01], [1.0, np.inf, 3.0]),
                                  maxfev=20_000)
    except (RuntimeError, ValueError):
        return None
    return CurveFit(*map(float, params))


@dataclass(frozen=True)
class LabelsNeeded:
    target: float
    median: float | None  # labels where the fitted curve reaches the target; None: not reached
    low: float | None  # 5th percentile over bootstrap refits
    high: float | None  # 95th percentile; None: in more than 5% of refits the target is never reached
    reached_share: float  # share of refits that reach the target at all

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def labels_needed(counts: Sequence[float], quality: Sequence[float], errors: Sequence[float], target: float,
                  seed: int = 0) -> LabelsNeeded:
    """Labels needed to reach `target`, with the spread of a parametric bootstrap over the points."""
    rng = np.random.default_rng(seed)
    y, sd = np.asarray(quality, dtype=float), np.asarray(errors, dtype=float)
    needs = []
    for _ in range(RESAMPLES):
        fit = fit_curve(counts, np.clip(y + rng.normal(0.0, sd), 0.0, 1.0))
        needs.append(np.inf if fit is None or fit.labels_for(target) is None else fit.labels_for(target))
    needs_array = np.asarray(needs)
    reached = float(np.isfinite(needs_array).mean())
    low, median, high = np.percentile(needs_array, [5, 50, 95], method="nearest")
    return LabelsNeeded(target, _finite(median), _finite(low), _finite(high), reached)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def still_rising(counts: Sequence[float], quality: Sequence[float], errors: Sequence[float]) -> bool:
    """Whether the last point is above the one before by more than their combined standard error."""
    if len(quality) < 2:
        return False
    order = np.argsort(counts)
    last, before = order[-1], order[-2]
    return float(quality[last] - quality[before]) > float(np.hypot(errors[last], errors[before]))


def power_target(bar: float, sd: float, test_queries: int, power: float = 0.8) -> float:
    """The true difference (or agreement) at which the rule passes on `test_queries` with probability `power`."""
    from scipy.stats import norm

    return bar + float(norm.ppf(0.975) + norm.ppf(power)) * sd / np.sqrt(test_queries)


def labels_for_power(counts: Sequence[float], values: Sequence[float], errors: Sequence[float], bar: float,
                     sd: float, test_queries: int, power: float = 0.8, seed: int = 0) -> LabelsNeeded:
    """Labels at which the rule passes with probability `power` on `test_queries`, for a measure in [-1, 1] (a
    difference; an agreement is in [0, 1] and fits the same way): fitted on (1 + value) / 2, which the power law
    bounds to [0, 1]."""
    target = power_target(bar, sd, test_queries, power)
    half = [(1 + v) / 2 for v in values]
    found = labels_needed(counts, half, [e / 2 for e in errors], (1 + target) / 2, seed)
    return LabelsNeeded(target, found.median, found.low, found.high, found.reached_share)
