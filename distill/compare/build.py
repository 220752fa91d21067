"""From measurements to `Metrics`: each model's quality and cost at saturation, the paired comparison, the
cross-fitted cascade, and the verdict by the configured rule."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from distill import cost as costs
from distill.artifacts import finite
from distill.compare.cascade import Cascade, Clears, confidences, cross_fitted_cascade
from distill.compare.decision import Evidence, Option, Recommendation, Rule, decide, failed_recommendation
from distill.compare.measure import Measured, costed_point, still_rising
from distill.compare.metrics import Metrics, ModelMetrics, mean
from distill.config import Config
from distill.stats import (
    confusion,
    exact_interval,
    mcnemar,
    mean_interval,
    paired_binary_interval,
    paired_difference,
    spread,
)
from distill.tasks import Task

AGREEMENT = "agreement with the teacher"
Z95 = 1.96


def row_scores(task: Task, predictions: list[str | None], gold: list[str | None]) -> list[float]:
    """The task's quality score of each answer that has gold."""
    return [task.score(p, g) for p, g in zip(predictions, gold, strict=True) if g is not None]


def agreement(task: Task, first: list[str | None], second: list[str | None]) -> list[float]:
    return [task.agree(a, b) for a, b in zip(first, second, strict=True)]


def _throughput(m: Measured, config: Config) -> dict:
    """Concurrency, speed and latency at the costed (saturation) level; nothing where no sweep ran."""
    if not m.points:
        return {}
    point = costed_point(m.points, config.compare.latency_slo_ms)
    done = [a for a in m.answers if a.error is None]
    tokens = sum(a.prompt_tokens + a.completion_tokens for a in done) / max(len(done), 1)
    return {"concurrency": point.concurrency, "queries_per_s": point.queries_per_s,
            "tokens_per_s": round(tokens * point.queries_per_s, 1), "latency_ms": point.latency_ms,
            "still_rising": still_rising(m.points, config.compare.latency_slo_ms),
            "sweep": [{k: v for k, v in asdict(p).items() if k != "latencies"} for p in m.points]}


def summarise(name: str, m: Measured, gold: list[str | None], task: Task, config: Config,
              teacher: list[str | None]) -> ModelMetrics:
    if m.status != "measured":
        return ModelMetrics(m.model, m.served_as, m.status, m.reason, m.server_log)
    n, scores = len(m.answers), row_scores(task, m.predictions, gold)
    speed = _throughput(m, config)
    tokens = {"prompt": sum(a.prompt_tokens for a in m.answers) / n,
              "completion": sum(a.completion_tokens for a in m.answers) / n,
              "cached": sum(a.cached_tokens for a in m.answers) / n}
    qps = speed.get("queries_per_s")
    price = (costs.teacher_cost_per_1k(config.cost, qps, tokens["prompt"], tokens["completion"],
                                       config.teacher, tokens["cached"]) if name == "teacher"
             else costs.hourly_cost_per_1k(m.price_per_hour, qps))
    return ModelMetrics(
        m.model, m.served_as, server_log=m.server_log, quality=mean(scores) if scores else None,
        quality_ci=mean_interval(scores), details=task.details(m.predictions, gold),
        valid_rate=sum(p is not None for p in m.predictions) / n, requests=m.sent,
        failed_requests=sum(a.error is not None for a in m.answers), answers_from_cache=m.from_cache,
        agreement_with_teacher=mean(agreement(task, m.predictions, teacher)),
        prompt_tokens_per_query=tokens["prompt"], completion_tokens_per_query=tokens["completion"],
        cached_tokens_per_query=tokens["cached"],
        cost_per_1k_queries=price, timed_at=m.timed_at, **speed)


def rule_for(config: Config, task: Task, gold: list[str | None]) -> Rule:
    if any(g is not None for g in gold):
        return Rule(task.quality_name, True, -config.compare.max_quality_drop)
    return Rule(AGREEMENT, False, config.compare.min_agreement)


def _rows(task: Task, student: Measured, teacher: Measured, gold: list[str | None], rule: Rule
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows the rule looks at, and per row: the quality of the student's answer and of the teacher's."""
    if rule.against_gold:
        rows = np.array([i for i, g in enumerate(gold) if g is not None], dtype=int)
        pick = [gold[i] for i in rows]
        return (rows, np.array(row_scores(task, [student.predictions[i] for i in rows], pick)),
                np.array(row_scores(task, [teacher.predictions[i] for i in rows], pick)))
    rows = np.arange(len(gold))
    return (rows, np.array(agreement(task, student.predictions, teacher.predictions)),
            np.array(agreement(task, teacher.predictions, teacher.predictions)))


def evidence(rule: Rule, student: np.ndarray, teacher: np.ndarray) -> Evidence:
    """The student's (or a cascade's) answers against the rule: a paired difference, or agreement."""
    if rule.against_gold:
        diff, interval = paired_difference(student, teacher) or (0.0, [-1.0, 1.0])
        return Evidence(diff, interval, spread(student - teacher), len(student))
    return Evidence(mean(student), mean_interval(student) or [0.0, 1.0], spread(student), len(student))


def clears_rule(rule: Rule, fixed: float | None) -> Clears:
    """Whether each candidate blend passes the rule on the rows that choose a cascade's threshold: by the rule's
    own interval for right/wrong scores; for graded scores by the normal bound (the rule's bootstrap at every
    threshold would cost minutes; the verdict itself still uses it, out of sample). `fixed`
    (compare.target_quality) asks the blend's quality to reach a set value instead."""

    def clears(blended: np.ndarray, deferred: np.ndarray) -> np.ndarray:
        n = blended.shape[1]
        if fixed is not None:
            return blended.mean(axis=1) >= fixed - 1e-12
        binary = np.isin(blended, (0.0, 1.0)).all() and np.isin(deferred, (0.0, 1.0)).all()
        if binary and rule.against_gold:
            low, _ = paired_binary_interval(((blended == 1) & (deferred == 0)).sum(axis=1),
                                            ((blended == 0) & (deferred == 1)).sum(axis=1), n)
        elif binary:
            low, _ = exact_interval(blended.sum(axis=1), n)
        else:
            values = blended - deferred if rule.against_gold else blended
            low = values.mean(axis=1) - Z95 * values.std(axis=1, ddof=1) / np.sqrt(n)
        return np.asarray(low) > rule.bar

    return clears


def run_cascade(config: Config, rule: Rule, kept: np.ndarray, deferred: np.ndarray, measured: Measured,
                rows: np.ndarray, prices: tuple[float, float]) -> Cascade:
    scores = {k: v[rows] for k, v in confidences(measured.answers, measured.predictions).items()}
    return cross_fitted_cascade(kept, deferred, scores, clears_rule(rule, config.compare.target_quality), *prices)


def _option(ev: Evidence, per_1k: float | None, teacher_per_1k: float | None, one_off: float, config: Config
            ) -> Option:
    even = costs.break_even_queries(one_off, teacher_per_1k, per_1k)
    return Option(ev, per_1k, costs.payback_days(even, config.cost.monthly_queries))


def recommend(config: Config, rule: Rule, models: dict[str, ModelMetrics], headline: str, student_ev: Evidence,
              cascade: tuple[Cascade, Evidence] | None, one_off: float) -> Recommendation:
    t, s = models["teacher"].cost_per_1k_queries, models[headline].cost_per_1k_queries
    student = _option(student_ev, s, t, one_off, config)
    # A verdict of `cascade` needs a threshold to serve: the blend chosen on every row must exist.
    servable = cascade is not None and cascade[0].threshold is not None
    blend = _option(cascade[1], cascade[0].cost_per_1k, t, one_off, config) if servable else None
    verdict, reason, needed = decide(rule, student, blend, t)
    gold = rule.against_gold
    cascade_json = None if cascade is None else {
        "confidence": cascade[0].confidence, "threshold": finite(cascade[0].threshold), "folds": cascade[0].folds,
        "student_share": cascade[0].student_share,
        "student_share_ci": cascade[0].student_share_ci, "cost_per_1k": cascade[0].cost_per_1k,
        "estimate": cascade[1].estimate, "interval": cascade[1].interval, "passes": cascade[1].passes(rule)}
    return Recommendation(
        verdict, rule.text(), reason, rule.measure, gold, rule.bar, student_ev.n,
        student_ev.estimate if gold else None, student_ev.interval if gold else None,
        None if gold else student_ev.estimate, None if gold else student_ev.interval, needed, cascade_json, s, t,
        student.payback_days)


def _failed(models: dict[str, ModelMetrics], headline: str) -> str | None:
    for name in ("teacher", headline):
        if not models[name].measured:
            return f"the {name}'s measurement {models[name].status}: {models[name].reason}"
    return None


def build_metrics(config: Config, measured: dict[str, Measured], gold: list[str | None], task: Task,
                  one_off: dict) -> Metrics:
    headline = "merged" if config.compare.student_serving == "merged" else "adapter"
    teacher = measured["teacher"]
    models = {name: summarise(name, m, gold, task, config, teacher.predictions) for name, m in measured.items()}
    rule = rule_for(config, task, gold)
    failure = _failed(models, headline)
    if failure is not None:
        recommendation = failed_recommendation(rule, len(gold), failure)
        return _assemble(config, task, models, headline, measured, gold, one_off, recommendation, None)
    rows, kept, deferred = _rows(task, measured[headline], teacher, gold, rule)
    student_ev = evidence(rule, kept, deferred)
    t, s = models["teacher"].cost_per_1k_queries, models[headline].cost_per_1k_queries
    cascade = None
    if t is not None and s is not None and len(rows):
        found = run_cascade(config, rule, kept, deferred, measured[headline], rows, (s, t))
        cascade = (found, evidence(rule, np.asarray(found.blended), deferred))
    recommendation = recommend(config, rule, models, headline, student_ev, cascade, one_off["total"])
    return _assemble(config, task, models, headline, measured, gold, one_off, recommendation,
                     cascade[0] if cascade else None)


def _cascade_json(cascade: Cascade | None, rule: Rule) -> dict | None:
    if cascade is None:
        return None
    # The curve starts at an infinite threshold (the teacher answers everything): null in strict JSON.
    return {"measure": rule.measure, "confidence": cascade.confidence, "threshold": finite(cascade.threshold),
            "folds": cascade.folds, "student_share": cascade.student_share,
            "student_share_ci": cascade.student_share_ci, "quality": cascade.quality,
            "cost_per_1k": cascade.cost_per_1k,
            "curve": [asdict(p) | {"threshold": finite(p.threshold)} for p in cascade.curve]}


def _pair_stats(task: Task, student: Measured, teacher: Measured, gold: list[str | None]) -> dict:
    """Agreement with its interval, and with gold the paired quality difference and McNemar's exact test."""
    if student.status != "measured" or teacher.status != "measured":
        return {"agreement": None, "agreement_ci": None, "quality_diff": None, "quality_diff_ci": None,
                "mcnemar": None}
    agreeing = agreement(task, student.predictions, teacher.predictions)
    s, t = row_scores(task, student.predictions, gold), row_scores(task, teacher.predictions, gold)
    diff = paired_difference(s, t)
    return {"agreement": mean(agreeing), "agreement_ci": mean_interval(agreeing),
            "quality_diff": diff[0] if diff else None, "quality_diff_ci": diff[1] if diff else None,
            # McNemar's exact test needs right/wrong answers; a graded score (ROUGE) has none.
            "mcnemar": mcnemar([x == 1 for x in s], [x == 1 for x in t]) if s and task.binary_score else None}


def _assemble(config: Config, task: Task, models: dict[str, ModelMetrics], headline: str,
              measured: dict[str, Measured], gold: list[str | None], one_off: dict, recommendation: Recommendation,
              cascade: Cascade | None) -> Metrics:
    t, s = models["teacher"].cost_per_1k_queries, models[headline].cost_per_1k_queries
    even = costs.break_even_queries(one_off["total"], t, s)
    monthly_queries = config.cost.monthly_queries
    student, teacher = measured[headline], measured["teacher"]
    has_gold = any(g is not None for g in gold)
    both = all(name in measured and measured[name].status == "measured" for name in ("adapter", "merged"))
    return Metrics(
        n_queries=len(gold), task={"type": task.name, "quality_name": task.quality_name},
        hardware=config.cost.hardware, headline=headline, models=models,
        **_pair_stats(task, student, teacher, gold), one_off_cost=one_off,
        cost_ratio=s / t if t and s is not None else None, break_even_queries=even,
        payback_days=costs.payback_days(even, monthly_queries), monthly=costs.monthly(t, s, monthly_queries),
        sensitivity=costs.sensitivity(one_off["total"], t, s, monthly_queries),
        cascade=_cascade_json(cascade, rule_for(config, task, gold)),
        confusion={"labels": task.labels, "reference": "gold" if has_gold else "teacher",
                   "matrix": confusion(student.predictions, gold if has_gold else teacher.predictions, task.labels)}
        if task.single_label and student.status == "measured" else None,
        prices=costs.prices_used(config.cost, config.teacher), recommendation=recommendation.to_json(),
        adapter_merged_agreement=mean(agreement(task, measured["adapter"].predictions,
                                                measured["merged"].predictions)) if both else None)
