"""The compare stage (`distill compare`): reads `generate/test.parquet`, the generate and train manifests and
`train/adapter/` (and `merged/`); writes `compare/metrics.json`, `answers.parquet`, `report.md` and `report.html`.

Teacher and student answer the same held-out queries on the same engine, one model at a
time (so neither slows the other), and the measured speed becomes cost per 1k queries and a break-even volume.

Measured: the teacher; the student through its adapter and, where a merged copy exists, merged; and the
student's base model given the teacher's prompt (what fine-tuning bought over prompting alone).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from distill.artifacts import read_rows, write_json, write_rows
from distill.compare import cost as costs
from distill.compare.cascade import cascade_curve, cheapest_meeting
from distill.compare.decision import recommendation
from distill.compare.metrics import latency_percentiles, mean
from distill.compare.report import write_reports
from distill.compare.stats import bootstrap_interval, confusion, mcnemar
from distill.config import Config
from distill.layout import RunLayout
from distill.stages import Manifest, Stage, StageRecorder, read_manifest
from distill.tasks import Task, make_task
from student.serve import serve_adapter, serve_merged, student_requests
from teacher.client import Answer, Endpoint, Target, map_concurrent
from teacher.generate import TEST_COLUMNS, teacher_request
from teacher.server import open_teacher


async def measure(target: Target, requests: list[dict[str, Any]], method: str, concurrency: int,
                  description: str) -> tuple[list[Answer], float]:
    """Answers and the wall-clock seconds they took, after one untimed warm-up request."""
    endpoint = Endpoint(target)
    send = getattr(endpoint, method)
    try:
        await send(**requests[0])
        start = time.perf_counter()
        answers = await map_concurrent(requests, lambda r: send(**r), concurrency, description)
        return answers, time.perf_counter() - start  # type: ignore[return-value]
    finally:
        await endpoint.close()


@dataclass
class Measured:
    model: str
    served_as: str
    answers: list[Answer]
    predictions: list[str | None]
    seconds: float
    price_per_hour: float

    def summary(self, gold: list[str | None], task: Task) -> dict[str, Any]:
        n = len(self.answers)
        tokens = sum(a.prompt_tokens + a.completion_tokens for a in self.answers)
        scores = row_scores(task, self.predictions, gold)
        return {
            "model": self.model,
            "served_as": self.served_as,
            "accuracy": sum(scores) / len(scores) if scores else None,
            "accuracy_ci": bootstrap_interval(scores),
            **task.details(self.predictions, gold),
            "valid_rate": sum(p is not None for p in self.predictions) / n,
            "failed_requests": sum(a.error is not None for a in self.answers),
            "latency_ms": latency_percentiles([a.latency_ms for a in self.answers]),
            "queries_per_s": round(n / self.seconds, 3),
            "tokens_per_s": round(tokens / self.seconds, 1),
            "prompt_tokens_per_query": sum(a.prompt_tokens for a in self.answers) / n,
            "completion_tokens_per_query": sum(a.completion_tokens for a in self.answers) / n,
            "cost_per_1k_queries": costs.hourly_cost_per_1k(self.price_per_hour, n / self.seconds),
        }


def row_scores(task: Task, predictions: list[str | None], gold: list[str | None]) -> list[float]:
    """The task's quality score of each answer that has gold."""
    return [task.score(p, g) for p, g in zip(predictions, gold, strict=True) if g is not None]


def agreement(task: Task, first: list[str | None], second: list[str | None]) -> list[float]:
    return [task.agree(a, b) for a, b in zip(first, second, strict=True)]


def _one_off_cost(config: Config, layout: RunLayout) -> dict[str, float]:
    generate = read_manifest(layout, "generate")
    train = read_manifest(layout, "train")
    labelling = costs.labelling_cost(config.cost, generate["timings"]["teacher"], generate["usage"]["prompt_tokens"],
                                     generate["usage"]["completion_tokens"])
    training = costs.training_cost(config.cost, train["seconds"])
    return {"labelling": labelling, "training": training, "total": labelling + training}


def _measure_all(config: Config, layout: RunLayout, recorder: StageRecorder, texts: list[str]
                 ) -> dict[str, Measured]:
    task = make_task(config.task)
    concurrency, cost = config.compare.concurrency, config.cost
    measured: dict[str, Measured] = {}
    served_teacher = f"endpoint {', '.join(config.teacher.urls)}" if config.teacher.urls else "vLLM"
    # The teacher answers as it would in production: one sample per query.
    teacher_requests = [teacher_request(task, config.teacher, t, samples=1) for t in texts]
    with recorder.timed("teacher"), open_teacher(config.teacher, layout.compare.server_log("teacher")) as target:
        answers, seconds = asyncio.run(measure(target, teacher_requests, "chat", concurrency, "teacher"))
    measured["teacher"] = Measured(config.teacher.model, served_teacher, answers,
                                   [task.parse(a.text, config.teacher.rationale).value for a in answers],
                                   seconds, cost.teacher_price_per_hour)
    requests_for_student = student_requests(task, config, texts)
    with recorder.timed("student"), serve_adapter(config, layout, layout.compare.server_log("student")) as targets:
        answers, seconds = asyncio.run(measure(targets[0], requests_for_student, "complete", concurrency, "student"))
        measured["adapter"] = Measured(config.student.model, "base + LoRA adapter (vLLM --enable-lora)", answers,
                                       [task.parse(a.text).value for a in answers], seconds,
                                       cost.student_price_per_hour)
        if config.compare.prompt_baseline:
            prompt_only = config.teacher.model_copy(update={"rationale": False})
            requests = [teacher_request(task, prompt_only, t, samples=1) for t in texts]
            answers, seconds = asyncio.run(measure(targets[1], requests, "chat", concurrency, "base, prompted"))
            measured["baseline"] = Measured(config.student.model, "base model with the teacher's prompt", answers,
                                            [task.parse(a.text).value for a in answers], seconds,
                                            cost.student_price_per_hour)
    if layout.train.merged.is_dir():
        with recorder.timed("merged"), serve_merged(config, layout, layout.compare.server_log("merged")) as target:
            answers, seconds = asyncio.run(measure(target, requests_for_student, "complete", concurrency, "merged"))
        measured["merged"] = Measured(config.student.model, "merged weights (adapter folded in)", answers,
                                      [task.parse(a.text).value for a in answers], seconds,
                                      cost.student_price_per_hour)
    return measured


def build_metrics(config: Config, measured: dict[str, Measured], gold: list[str | None], task: Task,
                  one_off: dict[str, float]) -> dict[str, Any]:
    headline = "merged" if config.compare.student_serving == "merged" else "adapter"
    teacher, student = measured["teacher"], measured[headline]
    summaries = {name: m.summary(gold, task) for name, m in measured.items()}
    for name, m in measured.items():
        summaries[name]["agreement_with_teacher"] = mean(agreement(task, m.predictions, teacher.predictions))
    teacher_summary = summaries["teacher"]
    teacher_summary["cost_per_1k_queries"] = costs.teacher_cost_per_1k(
        config.cost, teacher_summary["queries_per_s"], teacher_summary["prompt_tokens_per_query"],
        teacher_summary["completion_tokens_per_query"])
    t, s = teacher_summary["cost_per_1k_queries"], summaries[headline]["cost_per_1k_queries"]
    agreeing = agreement(task, student.predictions, teacher.predictions)
    has_gold = any(g is not None for g in gold)
    all_gold = has_gold and all(g is not None for g in gold)
    curve = cascade_curve(student.predictions, teacher.predictions, gold if all_gold else None,
                          [a.logprob for a in student.answers], s or 0.0, t or 0.0,
                          task.score if all_gold else task.agree)
    metrics: dict[str, Any] = {
        "n_queries": len(gold),
        "task": {"type": task.name, "quality": task.quality_name},
        "concurrency": config.compare.concurrency,
        "hardware": config.cost.hardware,
        "teacher": teacher_summary,
        "student": summaries[headline],
        "students": {name: summaries[name] for name in ("adapter", "merged") if name in summaries},
        "baseline": summaries.get("baseline"),
        "agreement": mean(agreeing),
        "agreement_ci": bootstrap_interval(agreeing),
        # McNemar's exact test needs right/wrong answers; a graded score (ROUGE) has none.
        "mcnemar": mcnemar([x == 1 for x in row_scores(task, student.predictions, gold)],
                           [x == 1 for x in row_scores(task, teacher.predictions, gold)])
        if has_gold and task.binary_score else None,
        "one_off_cost": one_off,
        "cost_ratio": s / t if t and s is not None else None,
        "break_even_queries": costs.break_even_queries(one_off["total"], t, s),
        "monthly": costs.monthly(t, s, config.cost.monthly_queries),
        "sensitivity": costs.sensitivity(one_off["total"], t, s, config.cost.monthly_queries),
        "cascade": {"quality": "accuracy" if all_gold else "agreement",
                    "target": config.compare.target_quality, "curve": curve,
                    "best": cheapest_meeting(curve, config.compare.target_quality)},
        "confusion": {"labels": task.labels, "reference": "gold" if has_gold else "teacher",
                      "matrix": confusion(student.predictions, gold if has_gold else teacher.predictions,
                                          task.labels)} if task.single_label else None,
        "prices": config.cost.model_dump(),
    }
    if "merged" in measured:
        metrics["adapter_merged_agreement"] = mean(agreement(task, measured["adapter"].predictions,
                                                             measured["merged"].predictions))
    metrics["recommendation"] = recommendation(metrics)
    return metrics


def compare(config: Config, layout: RunLayout) -> Manifest:
    """Write `compare/metrics.json`, `answers.parquet`, `report.md` and `report.html` (with plots)."""
    read_manifest(layout, "train")
    files = layout.compare
    recorder = StageRecorder(STAGE, config, layout)
    task = make_task(config.task)
    test = read_rows(layout.generate.test, TEST_COLUMNS)
    gold = [row["gold"] for row in test]
    measured = _measure_all(config, layout, recorder, [row["text"] for row in test])
    metrics = build_metrics(config, measured, gold, task, _one_off_cost(config, layout))
    latencies = {name: [a.latency_ms for a in m.answers] for name, m in measured.items()}
    write_rows(files.answers, [
        {"id": row["id"], "text": row["text"], "gold": row["gold"],
         **{name: m.predictions[i] for name, m in measured.items()},
         **{f"{name}_logprob": m.answers[i].logprob for name, m in measured.items()}}
        for i, row in enumerate(test)
    ])
    write_json(files.metrics, metrics)
    write_reports(metrics, latencies, files.folder, config.name)
    return recorder.finish(outputs=[files.metrics, files.answers, files.report_md, files.report_html],
                           counts={"queries": len(test)})


STAGE = Stage("compare", compare, reads=("task", "teacher", "student", "compare", "cost"), upstream="train")
