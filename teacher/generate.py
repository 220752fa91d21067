"""The generate stage: the teacher labels every input row once, with its output format enforced."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.artifacts import StageRecorder, write_rows
from distill.config import Config, TeacherConfig
from distill.data import Example, split_inputs
from distill.tasks import ClassificationTask, make_task
from teacher.cache import ResponseCache, request_key
from teacher.client import Answer, Endpoint, Target, map_concurrent
from teacher.server import open_teacher

OUTPUTS = "outputs.parquet"


def teacher_request(task: ClassificationTask, teacher: TeacherConfig, text: str) -> dict[str, Any]:
    request: dict[str, Any] = {
        "messages": task.teacher_messages(text),
        "temperature": teacher.temperature,
        "max_tokens": teacher.max_tokens,
        "logprobs": True,
        "extra_body": {"structured_outputs": task.teacher_constraint()},
    }
    if teacher.top_logprobs:
        request["top_logprobs"] = teacher.top_logprobs
    return request


async def ask_teacher(target: Target, teacher: TeacherConfig, requests: list[dict[str, Any]], description: str,
                      on_answer: Callable[[int, Answer], None] | None = None) -> list[Answer]:
    """The teacher's answers, in request order; `on_answer(index, answer)` sees each as it arrives."""
    endpoint = Endpoint(target, teacher.request_timeout_s, teacher.max_retries)
    try:
        return await map_concurrent(list(range(len(requests))), lambda i: endpoint.chat(**requests[i]),
                                    teacher.concurrency, description, on_result=on_answer)
    finally:
        await endpoint.close()


def _label_with_cache(config: Config, requests: list[dict[str, Any]], stage_dir: Path) -> tuple[list[Answer], int]:
    """Answers for every request and how many were sent; cached answers are reused, and the teacher is
    started only when something is missing."""
    cache = ResponseCache(stage_dir / "cache.sqlite")
    try:
        keys = [request_key(config.teacher.model, r) for r in requests]
        answers = [cache.get(k) for k in keys]
        missing = [i for i, answer in enumerate(answers) if answer is None]
        if missing:

            def store(j: int, answer: Answer) -> None:
                answers[missing[j]] = answer
                cache.put(keys[missing[j]], answer)

            with open_teacher(config.teacher, stage_dir / "server.log") as target:
                asyncio.run(ask_teacher(target, config.teacher, [requests[i] for i in missing], "teacher labels",
                                        on_answer=store))
    finally:
        cache.close()
    return answers, len(missing)  # type: ignore[return-value]


def _output_row(example: Example, answer: Answer, task: ClassificationTask) -> dict[str, Any]:
    parsed = task.parse(answer.text)
    return {
        "id": example.id,
        "text": example.text,
        "gold": example.gold,
        "raw": answer.text,
        "label": parsed.value,
        "error": answer.error or parsed.error,
        "logprob": answer.logprob,
        "top_logprobs": json.dumps(answer.top_logprobs),
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "latency_ms": answer.latency_ms,
    }


def generate(config: Config, run_dir: Path) -> dict[str, Any]:
    """Label `data.inputs` (less the held-out test rows) with the teacher; write `generate/outputs.parquet`."""
    stage_dir = run_dir / "generate"
    recorder = StageRecorder(stage_dir, "generate", config)
    task = make_task(config.task)
    examples = split_inputs(config).to_label
    requests = [teacher_request(task, config.teacher, e.text) for e in examples]
    with recorder.timed("teacher"):
        answers, sent = _label_with_cache(config, requests, stage_dir)
    rows = [_output_row(e, a, task) for e, a in zip(examples, answers, strict=True)]
    write_rows(stage_dir / OUTPUTS, rows)
    failed = sum(r["error"] is not None for r in rows)
    return recorder.finish(
        inputs={"inputs": config.data.inputs},
        counts={"rows": len(rows), "labelled": len(rows) - failed, "failed": failed, "requests_sent": sent,
                "from_cache": len(rows) - sent},
        usage={"prompt_tokens": sum(r["prompt_tokens"] for r in rows),
               "completion_tokens": sum(r["completion_tokens"] for r in rows)},
        teacher={"model": config.teacher.model, "url": config.teacher.url},
    )
