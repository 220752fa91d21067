"""Statistics that keep a report honest: intervals whose 95% means 95% at the sizes reports have (16 to a few
hundred queries), a paired test, the queries still needed to decide, and per-class quality.

- A share (accuracy, agreement): Clopper-Pearson, exact; it never collapses to [p, p] when every answer is right.
- A paired difference of right/wrong answers (student - teacher on the same queries): Tango's score interval,
  whose lower bound errs no more than 2.5% of the time with the truth on the rule's bar, and which keeps >= 93%
  two-sided coverage down to 16 pairs (tests/test_intervals.py simulates both).
- Graded scores (ROUGE) and their paired differences: a BCa bootstrap over the queries; a sample with no spread
  says nothing about the spread of fresh traffic, so it gets the exact bound on how often a row could differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
POWER = 0.8  # the chance that a test set of the suggested size decides, if the observed rates hold


def _z(confidence: float = CONFIDENCE) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def exact_interval(successes: Any, n: Any, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson interval for `successes` of `n` (arrays work element-wise)."""
    from scipy.stats import beta

    k, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    alpha = 1 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=1.0)


def _tango_score(only_first: np.ndarray, only_second: np.ndarray, n: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Tango's score statistic for P(first right) - P(second right) = delta: the observed difference over its
    spread under that delta (the discordant share's maximum-likelihood estimate constrained to it)."""
    b = -(only_first + only_second) + (2 * n - only_first + only_second) * delta
    c = -only_second * delta * (1 - delta)
    second_only = (np.sqrt(np.maximum(b * b - 8 * n * c, 0.0)) - b) / (4 * n)
    variance = np.maximum(n * (2 * second_only + delta * (1 - delta)), 1e-300)
    return (only_first - only_second - n * delta) / np.sqrt(variance)


def paired_binary_interval(only_first: Any, only_second: Any, n: Any, confidence: float = CONFIDENCE
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Tango's score interval for P(first right) - P(second right) from the discordant counts of n pairs.

    The rule reads only the lower bound, so what matters is that its one-sided error stays at 2.5%: a Wald-type
    interval (Bonett-Price) rejected a true difference on the bar 6% of the time at n=300 when the two rarely
    disagree, because the spread it estimates shrinks exactly when the student looks better. The score interval
    judges each candidate difference by the spread it implies (tests/test_intervals.py)."""
    first, second = np.asarray(only_first, dtype=float), np.asarray(only_second, dtype=float)
    n = np.broadcast_to(np.asarray(n, dtype=float), np.broadcast(first, second).shape)
    z = _z(confidence)
    bounds = []
    for side in (z, -z):  # the score falls as delta rises: the lower bound is where it equals z, the upper -z
        low, high = np.full(n.shape, -1.0), np.full(n.shape, 1.0)
        for _ in range(60):  # bisection, element-wise: 2^-60 of the range
            mid = (low + high) / 2
            above = _tango_score(first, second, n, mid) > side
            low, high = np.where(above, mid, low), np.where(above, high, mid)
        bounds.append((low + high) / 2)
    return bounds[0], bounds[1]


def _is_binary(values: np.ndarray) -> bool:
    return bool(np.isin(values, (0.0, 1.0)).all())


def _bootstrap(values: np.ndarray, seed: int, resamples: int) -> list[float]:
    from scipy.stats import bootstrap

    result = bootstrap((values,), np.mean, confidence_level=CONFIDENCE, n_resamples=resamples, method="BCa",
                       random_state=np.random.default_rng(seed))
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def mean_interval(scores: Sequence[float], seed: int = 0, resamples: int = 2000) -> list[float] | None:
    """95% interval for the mean of per-query scores in [0, 1]; None for an empty sample."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return None
    if _is_binary(values):
        low, high = exact_interval(values.sum(), values.size)
        return [float(low), float(high)]
    if values.size < 3 or values.min() == values.max():
        # No spread: how far the mean could move is bounded by how often a fresh row could differ at all.
        reach = float(exact_interval(0, values.size)[1])
        return [max(0.0, float(values.mean()) - reach), min(1.0, float(values.mean()) + reach)]
    return _bootstrap(values, seed, resamples)


def paired_difference(first: Sequence[float], second: Sequence[float], seed: int = 0, resamples: int = 2000
                      ) -> tuple[float, list[float]] | None:
    """Mean of first - second over paired per-query scores and its 95% interval; None for no pairs."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.size == 0:
        return None
    diff = a - b
    if _is_binary(a) and _is_binary(b):
        low, high = paired_binary_interval(np.sum((a == 1) & (b == 0)), np.sum((a == 0) & (b == 1)), a.size)
        return float(diff.mean()), [float(low), float(high)]
    if a.size < 3 or diff.min() == diff.max():
        reach = float(exact_interval(0, a.size)[1])  # at most this share of fresh rows could differ by up to 1
        return float(diff.mean()), [max(-1.0, float(diff.mean()) - reach), min(1.0, float(diff.mean()) + reach)]
    return float(diff.mean()), _bootstrap(diff, seed, resamples)


def spread(values: Sequence[float]) -> float:
    """Standard deviation of per-query values, kept above zero the way the intervals are (one pseudo-row each
    way), so a sample with no spread still asks for a finite number of queries."""
    x = np.asarray(values, dtype=float)
    centre = float(x.mean()) if x.size else 0.0
    padded = np.concatenate([x, [centre - 1, centre + 1]])
    return float(np.std(padded, ddof=1))


def queries_to_decide(estimate: float, sd: float, bar: float) -> int | None:
    """Test queries that would put the 95% interval clear of `bar` with 80% power if `estimate` and `sd` are the
    truth; None when the estimate sits on the bar (no size decides it)."""
    gap = abs(estimate - bar)
    if gap < 1e-9:
        return None
    from scipy.stats import norm

    return int(np.ceil(((_z() + float(norm.ppf(POWER))) * sd / gap) ** 2))


def mcnemar(first_right: Sequence[bool], second_right: Sequence[bool]) -> dict[str, Any]:
    """Exact McNemar test of two models on the same queries: only the queries where exactly one is right count."""
    from scipy.stats import binomtest

    only_first = sum(a and not b for a, b in zip(first_right, second_right, strict=True))
    only_second = sum(b and not a for a, b in zip(first_right, second_right, strict=True))
    discordant = only_first + only_second
    p_value = binomtest(only_first, discordant, 0.5).pvalue if discordant else 1.0
    return {"only_student_right": only_first, "only_teacher_right": only_second, "p_value": float(p_value),
            "significant": bool(p_value < 1 - CONFIDENCE)}


def class_report(predictions: Sequence[str | None], gold: Sequence[str | None], labels: list[str]
                 ) -> dict[str, Any]:
    """Macro-F1 and per-class precision/recall/F1 over rows with gold; an invalid answer counts as wrong.

    Macro-F1 averages over every label that occurs in gold or in the answers: a label the model predicts that
    gold never has is a class it gets wholly wrong (F1 0), and leaving it out would flatter the model.
    """
    from sklearn.metrics import precision_recall_fscore_support

    pairs = [(g, p if p is not None else "(invalid)") for p, g in zip(predictions, gold, strict=True)
             if g is not None]
    if not pairs:
        return {"macro_f1": None, "per_class": {}}
    y_true, y_pred = zip(*pairs, strict=True)
    seen = set(y_true) | set(y_pred)
    present = [label for label in labels if label in seen]
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=present,
                                                                     zero_division=0)
    per_class = {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for label, p, r, f, s in zip(present, precision, recall, f1, support, strict=True)}
    return {"macro_f1": float(np.mean(f1)) if len(f1) else None, "per_class": per_class}


def confusion(predictions: Sequence[str | None], reference: Sequence[str | None], labels: list[str]
              ) -> list[list[int]]:
    """Counts[reference][prediction] over `labels` plus a last column for invalid or unknown answers."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels) + 1), dtype=int)
    for prediction, truth in zip(predictions, reference, strict=True):
        if truth in index:
            matrix[index[truth], index.get(prediction, len(labels))] += 1
    return matrix.tolist()


def multilabel_report(predictions: Sequence[list[str] | None], gold: Sequence[list[str] | None], labels: list[str]
                      ) -> dict[str, Any]:
    """Micro- and macro-F1 and per-label precision/recall/F1 over rows with gold; an invalid answer counts as
    predicting no label."""
    from sklearn.metrics import precision_recall_fscore_support
    from sklearn.preprocessing import MultiLabelBinarizer

    pairs = [(g, p or []) for p, g in zip(predictions, gold, strict=True) if g is not None]
    if not pairs:
        return {"micro_f1": None, "macro_f1": None, "per_class": {}}
    binarizer = MultiLabelBinarizer(classes=labels)
    y_true = binarizer.fit_transform([g for g, _ in pairs])
    y_pred = binarizer.transform([p for _, p in pairs])
    present = [i for i in range(len(labels)) if y_true[:, i].any() or y_pred[:, i].any()]
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=present,
                                                                     zero_division=0)
    micro = precision_recall_fscore_support(y_true, y_pred, labels=present, average="micro", zero_division=0)[2]
    per_class = {labels[i]: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for i, p, r, f, s in zip(present, precision, recall, f1, support, strict=True)}
    return {"micro_f1": float(micro), "macro_f1": float(np.mean(f1)) if len(f1) else None, "per_class": per_class}
