"""A learning curve: the student trained on nested subsets of one labelled pool, every point measured on the same
test set, and a fitted curve that says how many labels reach the decision rule's bar and what they cost (rendered
by distill/study/report.py).

The bar is the rule's own (distill/compare/decision.py): with gold, the paired difference (student - teacher)
above -`compare.max_quality_drop`; without gold, agreement above `compare.min_agreement`. Labels needed are those
at which the rule would pass with 80% probability on a test set of this size (distill/study/fit.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from distill.artifacts import column_sums, count_rows
from distill.config import Config
from distill.cost import LABELLING_COLUMNS, labelling_cost_of_rows
from distill.layout import RunLayout
from distill.pipeline import RunSummary, StageOutcome, run_pipeline
from distill.stats import POWER, queries_to_decide
from distill.study.fit import fit_curve, labels_for_power, still_rising
from distill.study.folders import link_shared_stages, trained_rows

Z95 = 1.96  # a 95% interval spans about 2 x 1.96 standard errors


def _point(labels: int, metrics: dict[str, Any]) -> dict[str, Any]:
    student = metrics["student"]
    return {"labels": labels, "quality": student.get("quality"), "quality_ci": student.get("quality_ci"),
            "agreement": metrics.get("agreement"), "agreement_ci": metrics.get("agreement_ci"),
            "quality_diff": metrics.get("quality_diff"), "quality_diff_ci": metrics.get("quality_diff_ci"),
            "n_queries": metrics.get("n_queries"), "verdict": metrics["recommendation"]["verdict"],
            "against_gold": metrics["recommendation"]["against_gold"]}


def _standard_error(interval: list[float] | None) -> float:
    return 0.05 if not interval else max((interval[1] - interval[0]) / (2 * Z95), 1e-3)


def _cost_per_training_label(config: Config, main: RunLayout) -> float | None:
    """Teacher spend per kept training row in the main run: the price of an answer times answers per kept row."""
    totals = column_sums(main.generate.outputs, LABELLING_COLUMNS)
    trained = count_rows(main.filter.train)
    return labelling_cost_of_rows(config.cost, [totals], config.teacher) / trained if trained else None


def _fit(points: list[dict[str, Any]], measure: str, bar: float, per_label: float | None) -> dict[str, Any] | None:
    usable = [p for p in points if p[measure] is not None]
    if len(usable) < 3:
        return None
    counts = [p["labels"] for p in usable]
    values, errors = [p[measure] for p in usable], [_standard_error(p[f"{measure}_ci"]) for p in usable]
    queries = usable[-1]["n_queries"] or 1
    sd = errors[-1] * queries ** 0.5  # the spread per query at the largest point, nearest the budget sought
    needed = labels_for_power(counts, values, errors, bar, sd, queries, POWER).as_dict()
    cost = {k: (v * per_label if v is not None and per_label is not None else None)
            for k, v in needed.items() if k in ("median", "low", "high")}
    fit = fit_curve(counts, [(1 + v) / 2 for v in values])
    # A ceiling at the fit's bound is not pinned by the points (the curve is still climbing): no figure from it.
    ceiling = None if fit is None or fit.ceiling > 1 - 1e-6 else 2 * fit.ceiling - 1
    return {"bar": bar, "target": needed["target"], "power": POWER, "test_queries": queries,
            "labels_needed": needed, "labelling_cost": cost, "ceiling": ceiling,
            # However many labels: the test queries the rule needs at the fitted ceiling
            "min_test_queries": queries_to_decide(ceiling, sd, bar) if ceiling is not None and ceiling > bar
            else None, "still_rising": still_rising(counts, values, errors)}


def run_learning_curve(config: Config, layout: RunLayout, main: RunSummary,
                       on_stage: Callable[[StageOutcome], None] | None = None) -> dict[str, Any]:
    """Every `study.label_counts` point, plus the main run at its full training set, fitted."""
    full = count_rows(layout.filter.train)
    points = [_point(trained_rows(layout), main.metrics)]  # the main student may predate the filter's rows
    for labels in config.study.label_counts:
        if labels >= full:
            continue  # the main run already is this point: the pool has no more kept rows
        point_layout = layout.variant(f"labels-{labels}")
        summary = run_pipeline(config.with_label_budget(labels), point_layout, on_stage=on_stage,
                               may_keep_student=False, set_up=partial(link_shared_stages, point_layout, ("generate",)))
        points.append(_point(labels, summary.metrics))
    points.sort(key=lambda p: p["labels"])
    per_label = _cost_per_training_label(config, layout)
    return {"points": points, "pool_labels": full, "cost_per_training_label": per_label,
            "quality": _fit(points, "quality_diff", -config.compare.max_quality_drop, per_label),
            "agreement": _fit(points, "agreement", config.compare.min_agreement, per_label)}
