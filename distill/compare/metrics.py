"""Compare's metrics, typed: one `ModelMetrics` per served model and the `Metrics` of a comparison, written to
`compare/metrics.json` by `Metrics.to_json()` (the machine-readable output; reports render prose from it).

`quality` is the task's own score against gold (accuracy for labels, exact object match for extraction, ROUGE-L F1
for text); `task.quality_name` says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def mean(values: Sequence[float]) -> float:
    """Mean of per-row scores; 0 for no rows."""
    return float(np.mean(values)) if len(values) else 0.0


def latency_percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(latencies_ms, dtype=float)
    if values.size == 0:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2)}


@dataclass
class ModelMetrics:
    """One served model's numbers on the test queries; a failed or skipped model carries why, and no numbers."""

    model: str
    served_as: str
    status: str = "measured"  # "measured", "failed" (its requests failed) or "skipped" (it cannot be served)
    reason: str | None = None  # the first error, or why it was skipped
    server_log: str | None = None
    quality: float | None = None
    quality_ci: list[float] | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the task's own extras: macro-F1, per field, ROUGE
    valid_rate: float | None = None
    requests: int = 0  # sent to it in this run (the sweep's included); cached answers cost none
    failed_requests: int = 0
    answers_from_cache: int = 0
    agreement_with_teacher: float | None = None
    concurrency: int | None = None  # requests in flight it was costed at (saturation)
    queries_per_s: float | None = None
    still_rising: bool = False  # its top level still raised queries/s: not saturated, so its cost is at most this
    tokens_per_s: float | None = None
    latency_ms: dict[str, float] = field(default_factory=lambda: latency_percentiles([]))
    prompt_tokens_per_query: float | None = None
    completion_tokens_per_query: float | None = None
    cached_tokens_per_query: float | None = None  # prompt tokens the provider served from its cache (billed less)
    cost_per_1k_queries: float | None = None
    sweep: list[dict[str, Any]] = field(default_factory=list)
    timed_at: str | None = None  # set where the sweep is a stored one, reused: when it was measured

    @property
    def measured(self) -> bool:
        return self.status == "measured"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {**{k: v for k, v in data.items() if k != "details"}, **data["details"]}


@dataclass
class Metrics:
    n_queries: int
    task: dict[str, str]  # {"type", "quality_name"}
    hardware: str
    headline: str  # which student the verdict is about: "adapter" or "merged"
    models: dict[str, ModelMetrics]  # "teacher", "adapter", "merged", "baseline", those measured or tried
    agreement: float | None
    agreement_ci: list[float] | None
    quality_diff: float | None  # student - teacher, paired, on rows with gold
    quality_diff_ci: list[float] | None
    mcnemar: dict[str, Any] | None
    one_off_cost: dict[str, Any]
    cost_ratio: float | None
    break_even_queries: float | None
    payback_days: float | None
    monthly: dict[str, Any]
    sensitivity: list[dict[str, Any]]
    cascade: dict[str, Any] | None
    confusion: dict[str, Any] | None
    prices: dict[str, Any]
    recommendation: dict[str, Any]
    adapter_merged_agreement: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "models"}
        models = {name: m.to_json() for name, m in self.models.items()}
        return {**data, "teacher": models["teacher"], "student": models[self.headline],
                "students": {n: models[n] for n in ("adapter", "merged") if n in models},
                "baseline": models.get("baseline"),
                "concurrency": {name: m.concurrency for name, m in self.models.items()}}
