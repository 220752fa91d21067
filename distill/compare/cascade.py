"""A cascade: the student answers what it is sure of and hands the rest to the teacher.

Every query first goes to the student (its cost is always paid); below the confidence threshold the teacher
answers too, and its answer is the one used. A threshold picked on the rows it is then scored on flatters it
(in simulation it missed its target on fresh traffic about half the time), so the threshold is cross-fitted:
each fold of the test rows is answered with the threshold chosen on the other folds, and the cascade's quality
is reported on those out-of-sample answers only.

The threshold is the cheapest whose blend passes the rule itself on the rows that choose it (`clears`: with gold,
the lower 95% bound of the paired difference above the bar), not the one whose point estimate just meets the bar:
a blend tuned to sit on the bar passes a test that asks its lower bound to clear it almost never (0 of 30
simulated test sets of 1,000 queries, where a bound-tuned threshold passed 50 of 50).

Confidence is one of two measures, chosen by measurement inside the same cross-fit (the one whose threshold hands
the student more queries at the bar): the mean log-probability of the answer's tokens (length-fair for JSON and
summaries) or the answer's whole log-probability (for a label, the probability mass of that label).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from distill.cost import cascade_cost_per_1k
from distill.stats import exact_interval
from teacher.client import Answer

CONFIDENCE_KINDS = ("mean_token_logprob", "answer_logprob")
FOLDS = 5


def confidences(answers: Sequence[Answer], predictions: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Each confidence measure per answer; an invalid or failed answer is never confident (-inf)."""
    total = np.array([-np.inf if p is None or a.logprob is None else a.logprob
                      for a, p in zip(answers, predictions, strict=True)], dtype=float)
    tokens = np.array([max(a.completion_tokens, 1) for a in answers], dtype=float)
    return {"mean_token_logprob": total / tokens, "answer_logprob": total}


@dataclass
class CurvePoint:
    threshold: float
    student_share: float
    quality: float
    cost_per_1k: float


def cascade_curve(kept: np.ndarray, deferred: np.ndarray, confidence: np.ndarray, student_per_1k: float,
                  teacher_per_1k: float) -> list[CurvePoint]:
    """For each distinct threshold: the share the student keeps, the blended quality and the cost per 1k.

    `kept[i]` is row i's quality when the student's answer is used, `deferred[i]` when the teacher's is.
    """
    n = len(kept)
    points = []
    for threshold in sorted({float("inf"), *confidence[np.isfinite(confidence)].tolist()}, reverse=True):
        keep = confidence >= threshold
        share = float(keep.mean()) if n else 0.0
        quality = float(np.where(keep, kept, deferred).mean()) if n else 0.0
        points.append(CurvePoint(threshold, share, quality, cascade_cost_per_1k(student_per_1k, teacher_per_1k,
                                                                               share)))
    return points


# (blended quality: one row per candidate threshold, one column per query; teacher quality per query) -> for
# each candidate, whether its blend passes the rule on these queries
Clears = Callable[[np.ndarray, np.ndarray], np.ndarray]
CELLS_PER_CHUNK = 4_000_000  # candidates are judged in chunks of this many cells, so memory stays bounded


def cheapest_clearing(curve: list[CurvePoint], kept: np.ndarray, deferred: np.ndarray, confidence: np.ndarray,
                      clears: Clears) -> CurvePoint | None:
    """The lowest-cost point whose blend `clears` the rule on these rows; None if none does. An infinite threshold
    (every query to the teacher, or every one to the student) is no cascade: the teacher or the student alone."""
    ranked = sorted((p for p in curve if np.isfinite(p.threshold)), key=lambda p: p.cost_per_1k)
    step = max(1, CELLS_PER_CHUNK // max(len(kept), 1))
    for start in range(0, len(ranked), step):
        chunk = ranked[start:start + step]
        thresholds = np.array([p.threshold for p in chunk])[:, None]
        passing = np.flatnonzero(clears(np.where(confidence[None, :] >= thresholds, kept, deferred), deferred))
        if passing.size:
            return chunk[int(passing[0])]
    return None


@dataclass
class Cascade:
    """The cascade as it would run: confidence measure and threshold chosen on all rows, and its quality,
    share and cost measured out of sample (each row answered by a threshold chosen without it)."""

    confidence: str | None
    threshold: float | None
    student_share: float
    student_share_ci: list[float]  # exact 95% interval of the out-of-sample share
    quality: float
    cost_per_1k: float
    folds: int
    curve: list[CurvePoint] = field(default_factory=list)  # in-sample, for the plot
    blended: list[float] = field(default_factory=list, repr=False)  # out-of-sample quality per row


def _choose(rows: np.ndarray, kept: np.ndarray, deferred: np.ndarray, scores: dict[str, np.ndarray],
            clears: Clears, prices: tuple[float, float]) -> tuple[str, CurvePoint] | None:
    """The confidence measure and threshold that clear the rule most cheaply on `rows`."""
    best: tuple[str, CurvePoint] | None = None
    for kind in CONFIDENCE_KINDS:
        curve = cascade_curve(kept[rows], deferred[rows], scores[kind][rows], *prices)
        point = cheapest_clearing(curve, kept[rows], deferred[rows], scores[kind][rows], clears)
        if point is not None and (best is None or point.cost_per_1k < best[1].cost_per_1k):
            best = (kind, point)
    return best


def cross_fitted_cascade(kept: Sequence[float], deferred: Sequence[float], scores: dict[str, np.ndarray],
                         clears: Clears, student_per_1k: float, teacher_per_1k: float, seed: int = 0) -> Cascade:
    """`clears(blended, deferred)` says whether a blend passes the rule on the rows it is given."""
    kept_a, deferred_a = np.asarray(kept, dtype=float), np.asarray(deferred, dtype=float)
    n, prices = len(kept_a), (student_per_1k, teacher_per_1k)
    folds = max(2, min(FOLDS, n // 2)) if n >= 4 else 1
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    keep = np.zeros(n, dtype=bool)
    for fold in range(folds if folds > 1 else 0):
        chosen = _choose(np.flatnonzero(fold_of != fold), kept_a, deferred_a, scores, clears, prices)
        if chosen is not None:
            rows = np.flatnonzero(fold_of == fold)
            keep[rows] = scores[chosen[0]][rows] >= chosen[1].threshold
    share = float(keep.mean()) if n else 0.0
    blended = np.where(keep, kept_a, deferred_a)
    deploy = _choose(np.arange(n), kept_a, deferred_a, scores, clears, prices)
    kind = deploy[0] if deploy else CONFIDENCE_KINDS[0]
    return Cascade(confidence=deploy[0] if deploy else None, threshold=deploy[1].threshold if deploy else None,
                   student_share=share, student_share_ci=[float(x) for x in exact_interval(keep.sum(), max(n, 1))],
                   quality=float(blended.mean()) if n else 0.0,
                   cost_per_1k=cascade_cost_per_1k(student_per_1k, teacher_per_1k, share), folds=folds,
                   curve=cascade_curve(kept_a, deferred_a, scores[kind], *prices), blended=blended.tolist())
