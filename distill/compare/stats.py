"""Statistics that keep a report honest: bootstrap intervals, a paired test, per-class quality."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95


def bootstrap_interval(successes: Sequence[bool], seed: int = 0, resamples: int = 2000) -> list[float] | None:
    """95% percentile-bootstrap interval for a share (accuracy, agreement); None for an empty sample."""
    from scipy.stats import bootstrap

    values = np.asarray(successes, dtype=float)
    if values.size < 2 or values.min() == values.max():
        return None if values.size == 0 else [float(values.mean())] * 2  # no spread to resample
    result = bootstrap((values,), np.mean, confidence_level=CONFIDENCE, n_resamples=resamples,
                       method="percentile", random_state=np.random.default_rng(seed))
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


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
    """Macro-F1 and per-class precision/recall/F1 over rows with gold; an invalid answer counts as wrong."""
    from sklearn.metrics import precision_recall_fscore_support

    pairs = [(g, p if p is not None else "(invalid)") for p, g in zip(predictions, gold, strict=True)
             if g is not None]
    if not pairs:
        return {"macro_f1": None, "per_class": {}}
    y_true, y_pred = zip(*pairs, strict=True)
    present = [label for label in labels if label in y_true]
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
    present = [i for i in range(len(labels)) if y_true[:, i].any()]
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=present,
                                                                     zero_division=0)
    micro = precision_recall_fscore_support(y_true, y_pred, labels=present, average="micro", zero_division=0)[2]
    per_class = {labels[i]: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for i, p, r, f, s in zip(present, precision, recall, f1, support, strict=True)}
    return {"micro_f1": float(micro), "macro_f1": float(np.mean(f1)) if len(f1) else None, "per_class": per_class}
