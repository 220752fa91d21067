"""The compare stage: teacher and student answer the same held-out queries on the same engine, one at a time
(so neither slows the other), and the measured speed becomes cost per 1k queries and a break-even volume."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from distill import cost as costs
from distill.artifacts import StageRecorder, read_manifest, write_json, write_rows
from distill.config import Config
from distill.data import split_inputs
from distill.metrics import accuracy, agreement, latency_percentiles
from distill.report import write_reports
from distill.tasks import make_task
from student.serve import serve_student, student_request
from teacher.client import Answer, Endpoint, Target, map_concurrent
from teacher.generate import teacher_request
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
        return answers, time.perf_counter() - start
    finally:
        await endpoint.close()


def model_summary(model: str, served_as: str, answers: list[Answer], predictions: list[str | None],
                  gold: list[str | None], seconds: float) -> dict[str, Any]:
    n = len(answers)
    return {
        "model": model,
        "served_as": served_as,
        "accuracy": accuracy(predictions, gold),
        "valid_rate": sum(p is not None for p in predictions) / n,
        "failed_requests": sum(a.error is not None for a in answers),
        "latency_ms": latency_percentiles([a.latency_ms for a in answers]),
        "queries_per_s": round(n / seconds, 3),
        "prompt_tokens_per_query": sum(a.prompt_tokens for a in answers) / n,
        "completion_tokens_per_query": sum(a.completion_tokens for a in answers) / n,
    }


def add_costs(metrics: dict[str, Any], config: Config, run_dir: Path) -> None:
    cost = config.cost
    teacher, student = metrics["teacher"], metrics["student"]
    teacher["cost_per_1k_queries"] = costs.teacher_cost_per_1k(
        cost, teacher["queries_per_s"], teacher["prompt_tokens_per_query"], teacher["completion_tokens_per_query"])
    student["cost_per_1k_queries"] = costs.hourly_cost_per_1k(cost.student_price_per_hour, student["queries_per_s"])
    generate = read_manifest(run_dir / "generate", "distill generate")
    train = read_manifest(run_dir / "train", "distill train")
    labelling = costs.labelling_cost(cost, generate["timings"]["teacher"], generate["usage"]["prompt_tokens"],
                                     generate["usage"]["completion_tokens"])
    training = costs.training_cost(cost, train["seconds"])
    metrics["one_off_cost"] = {"labelling": labelling, "training": training, "total": labelling + training}
    t, s = teacher["cost_per_1k_queries"], student["cost_per_1k_queries"]
    metrics["cost_ratio"] = s / t if t and s is not None else None
    metrics["break_even_queries"] = costs.break_even_queries(labelling + training, t, s)
    metrics["prices"] = cost.model_dump()


def compare(config: Config, run_dir: Path) -> dict[str, Any]:
    """Write `compare/metrics.json`, `answers.parquet`, `report.md` and `report.html`."""
    read_manifest(run_dir / "train", "distill train")
    stage_dir = run_dir / "compare"
    recorder = StageRecorder(stage_dir, "compare", config)
    task = make_task(config.task)
    test = split_inputs(config).test
    gold = [e.gold for e in test]
    concurrency = config.compare.concurrency

    with recorder.timed("teacher"), open_teacher(config.teacher, stage_dir / "teacher_server.log") as target:
        # The teacher answers as it would in production: one sample per query.
        requests = [teacher_request(task, config.teacher, e.text, samples=1) for e in test]
        teacher_answers, teacher_s = asyncio.run(measure(target, requests, "chat", concurrency, "teacher"))
    with recorder.timed("student"), serve_student(config, run_dir, stage_dir / "student_server.log") as target:
        requests = [student_request(task, config, e.text) for e in test]
        student_answers, student_s = asyncio.run(measure(target, requests, "complete", concurrency, "student"))

    teacher_labels = [task.parse(a.text, config.teacher.rationale).value for a in teacher_answers]
    student_labels = [task.parse(a.text).value for a in student_answers]
    teacher_served = f"endpoint {', '.join(config.teacher.urls)}" if config.teacher.urls else "vLLM"
    served = "base + LoRA adapter (vLLM --enable-lora)" if config.compare.student_serving == "adapter" else "merged"
    metrics: dict[str, Any] = {
        "n_queries": len(test),
        "concurrency": concurrency,
        "hardware": config.cost.hardware,
        "teacher": model_summary(config.teacher.model, teacher_served, teacher_answers,
                                 teacher_labels, gold, teacher_s),
        "student": model_summary(config.student.model, served, student_answers, student_labels, gold, student_s),
        "agreement": agreement(student_labels, teacher_labels),
    }
    add_costs(metrics, config, run_dir)
    write_rows(stage_dir / "answers.parquet", [
        {"id": e.id, "text": e.text, "gold": e.gold, "teacher": t, "student": s,
         "teacher_logprob": ta.logprob, "student_logprob": sa.logprob}
        for e, t, s, ta, sa in zip(test, teacher_labels, student_labels, teacher_answers, student_answers, strict=True)
    ])
    write_json(stage_dir / "metrics.json", metrics)
    write_reports(metrics, stage_dir, config.name)
    recorder.finish(inputs={"adapter_config": run_dir / "train" / "adapter" / "adapter_config.json"},
                    outputs=[stage_dir / n for n in ("metrics.json", "answers.parquet", "report.md", "report.html")],
                    counts={"queries": len(test)})
    return metrics
