"""Quality and speed numbers for one model's answers to the test queries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(predictions: Sequence[str | None], gold: Sequence[str | None]) -> float | None:
    """Share of rows whose prediction equals gold, over rows that have gold; None when no row has gold."""
    pairs = [(p, g) for p, g in zip(predictions, gold, strict=True) if g is not None]
    if not pairs:
        return None
    return sum(p == g for p, g in pairs) / len(pairs)


def agreement(a: Sequence[str | None], b: Sequence[str | None]) -> float:
    """Share of rows where both models gave the same valid answer."""
    if not a:
        return 0.0
    return sum(x is not None and x == y for x, y in zip(a, b, strict=True)) / len(a)


def latency_percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(latencies_ms, dtype=float)
    if values.size == 0:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2)}
