"""The generate stage: the teacher labels every input row once, with its output format enforced.

Every answer goes into a durable cache as it arrives, so a killed run resumes with nothing lost or paid twice;
failed requests are recorded in the outputs with their error and retried by the next run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

from distill.artifacts import write_rows
from distill.compare import cost as costs
from distill.config import Config, TeacherConfig
from distill.data.inputs import Example, split_inputs
from distill.layout import GenerateFiles, RunLayout
from distill.stages import Manifest, Stage, StageRecorder
from distill.tasks import Parsed, Task, make_task
from teacher import fidelity
from teacher.cache import ResponseCache, request_key
from teacher.client import Answer, Endpoint, Target, map_concurrent
from teacher.server import open_teacher, prefix_cache_counters
from teacher.tokens import estimate, load_teacher_tokenizer, oversize_rows

NOT_SENT = "not sent: teacher.max_cost reached"


def teacher_request(task: Task, teacher: TeacherConfig, text: str, samples: int | None = None,
                    constrained: bool = True) -> dict[str, Any]:
    """The chat request for one input; `constrained=False` leaves out the output constraint (fidelity checks)."""
    request: dict[str, Any] = {
        "messages": task.teacher_messages(text, teacher.rationale),
        "temperature": teacher.temperature,
        "max_tokens": task.answer_token_budget(teacher.max_tokens, teacher.rationale),
        "logprobs": True,
    }
    constraint = task.teacher_constraint(teacher.rationale) if constrained else None
    if constraint is not None:
        request["extra_body"] = {"structured_outputs": constraint}
    if (samples or teacher.samples) > 1:
        request["n"] = samples or teacher.samples
    if teacher.top_logprobs:
        request["top_logprobs"] = teacher.top_logprobs
    return request


async def ask_teacher(target: Target, teacher: TeacherConfig, requests: list[dict[str, Any]], description: str,
                      on_answer: Callable[[int, Answer], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> list[Answer | None]:
    """The teacher's answers in request order (None where `should_stop` held them back)."""
    endpoint = Endpoint(target, teacher.request_timeout_s, teacher.max_retries)
    try:
        return await map_concurrent(requests, lambda r: endpoint.chat(**r), teacher.concurrency, description,
                                    on_result=on_answer, should_stop=should_stop)
    finally:
        await endpoint.close()


class Budget:
    """Money spent on requests sent in this run: per-token prices where set, else serving time by the hour."""

    def __init__(self, config: Config) -> None:
        self.cost = config.cost
        self.limit = config.teacher.max_cost
        self.started = time.monotonic()
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def add(self, answer: Answer) -> None:
        self.prompt_tokens += answer.prompt_tokens
        self.completion_tokens += answer.completion_tokens

    def spent(self) -> float:
        return costs.labelling_cost(self.cost, time.monotonic() - self.started, self.prompt_tokens,
                                    self.completion_tokens)

    def exhausted(self) -> bool:
        return self.limit is not None and self.spent() >= self.limit


@dataclass
class Labelling:
    answers: list[Answer | None]
    sent: int
    cached: int
    budget: Budget
    prefix_cache: dict[str, float] | None


def _label_with_cache(config: Config, requests: list[dict[str, Any]], skipped: dict[int, str],
                      files: GenerateFiles) -> Labelling:
    """Answers for every request; cached answers are reused, and the teacher is started only when something
    is missing. An answer is in the cache before the next one is accounted. Skipped requests are not sent."""
    cache = ResponseCache(files.cache)
    budget = Budget(config)
    try:
        keys = [request_key(config.teacher.model, r) for r in requests]
        answers: list[Answer | None] = [
            Answer(error=skipped[i]) if i in skipped else cache.get(k) for i, k in enumerate(keys)]
        missing = [i for i, answer in enumerate(answers) if answer is None]
        prefix = None
        if missing:

            def store(j: int, answer: Answer) -> None:
                answers[missing[j]] = answer
                cache.put(keys[missing[j]], answer)
                budget.add(answer)

            with open_teacher(config.teacher, files.server_log) as target:
                before = prefix_cache_counters(target)
                budget.started = time.monotonic()
                asyncio.run(ask_teacher(target, config.teacher, [requests[i] for i in missing], "teacher labels",
                                        on_answer=store, should_stop=budget.exhausted))
                prefix = _hit_rate(before, prefix_cache_counters(target))
    finally:
        cache.close()
    sent = sum(answers[i] is not None for i in missing)
    return Labelling(answers, sent, len(requests) - len(skipped) - len(missing), budget, prefix)


def _hit_rate(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float] | None:
    if before is None or after is None:
        return None
    queries = after["queries"] - before["queries"]
    hits = after["hits"] - before["hits"]
    return {"hit_tokens": hits, "query_tokens": queries, "hit_rate": hits / queries if queries else 0.0}


def vote(parsed: list[Parsed]) -> tuple[Parsed, float | None]:
    """The majority answer among the samples and its share of all samples (None for a single sample)."""
    if len(parsed) == 1:
        return parsed[0], None
    counts = Counter(p.value for p in parsed if p.value is not None)
    if not counts:
        return parsed[0], 0.0
    winner, count = counts.most_common(1)[0]
    return next(p for p in parsed if p.value == winner), count / len(parsed)


@dataclass(frozen=True)
class TeacherRow:
    """One row of `generate/outputs.parquet`: an input and the teacher's answer to it."""

    id: str
    text: str
    gold: str | None
    raw: str | None  # the chosen sample's text as the teacher wrote it
    label: str | None  # its canonical answer; None when invalid
    error: str | None
    rationale: str | None
    vote_share: float | None  # share of samples agreeing with the label (None for one sample)
    samples: str  # JSON list of every sample's canonical answer
    logprob: float | None  # summed log-probability of the chosen sample's tokens
    top_logprobs: str  # JSON: the top alternatives at each answer token
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


TEACHER_COLUMNS = tuple(f.name for f in fields(TeacherRow))
TEST_COLUMNS = ("id", "text", "gold")  # `generate/test.parquet`: the held-out queries, split once, here


def output_row(example: Example, answer: Answer | None, task: Task, rationale: bool) -> dict[str, Any]:
    answer = answer or Answer(error=NOT_SENT)
    parsed = [task.parse(s.text, rationale) for s in answer.samples] or [task.parse(None)]
    chosen, share = vote(parsed)
    sample = answer.samples[parsed.index(chosen)] if answer.samples else None
    return asdict(TeacherRow(
        id=example.id, text=example.text, gold=example.gold, raw=sample.text if sample else None,
        label=chosen.value, error=answer.error or chosen.error, rationale=chosen.rationale, vote_share=share,
        samples=json.dumps([p.value for p in parsed]), logprob=sample.logprob if sample else None,
        top_logprobs=json.dumps(sample.top_logprobs if sample else []), prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens, latency_ms=answer.latency_ms))


@dataclass
class Plan:
    task: Task
    examples: list[Example]
    test: list[Example]
    requests: list[dict[str, Any]]
    oversize: dict[int, str]  # row index -> why it is not sent
    tokenizer: Any | None


def make_plan(config: Config) -> Plan:
    """The rows to label and their requests, after checking every prompt fits the teacher's context."""
    task = make_task(config.task)
    splits = split_inputs(config)
    examples = splits.to_label
    requests = [teacher_request(task, config.teacher, e.text) for e in examples]
    # Only a server we start has a context length known here; a running endpoint rejects what does not fit.
    tokenizer = None if config.teacher.urls else load_teacher_tokenizer(config)
    return Plan(task, examples, splits.test, requests, oversize_rows(config, examples, requests, tokenizer),
                tokenizer)


def dry_run(config: Config, layout: RunLayout) -> dict[str, Any]:
    """What `generate` would send and cost, counting the answers already cached as free; sends nothing."""
    plan = make_plan(config)
    cache_path = layout.generate.cache
    cache = ResponseCache(cache_path) if cache_path.exists() else None
    try:
        to_send = [r for i, r in enumerate(plan.requests) if i not in plan.oversize
                   and (cache is None or cache.get(request_key(config.teacher.model, r)) is None)]
    finally:
        if cache is not None:
            cache.close()
    tokenizer = plan.tokenizer or load_teacher_tokenizer(config)
    result = estimate(config, to_send, tokenizer, plan.task.labels if plan.task.single_label else None)
    return {**result, "rows": len(plan.requests), "cached": len(plan.requests) - len(plan.oversize) - len(to_send),
            "oversize": len(plan.oversize)}


def generate(config: Config, layout: RunLayout) -> Manifest:
    """Label `data.inputs` (less the held-out test rows) with the teacher; write `generate/outputs.parquet` and
    the test split, `generate/test.parquet`, which filter and compare read."""
    files = layout.generate
    recorder = StageRecorder(STAGE, config, layout)
    plan = make_plan(config)
    with recorder.timed("teacher"):
        labelling = _label_with_cache(config, plan.requests, plan.oversize, files)
    rows = [output_row(e, a, plan.task, config.teacher.rationale)
            for e, a in zip(plan.examples, labelling.answers, strict=True)]
    write_rows(files.outputs, rows, TEACHER_COLUMNS)
    write_rows(files.test, [{"id": e.id, "text": e.text, "gold": e.gold} for e in plan.test], TEST_COLUMNS)
    with recorder.timed("fidelity_check"):  # opt-in: teacher.fidelity_check
        checked = fidelity.run(config, plan.task, plan.examples, plan.oversize, files,
                               partial(teacher_request, plan.task))
    not_sent = sum(r["error"] == NOT_SENT for r in rows)
    return recorder.finish(
        outputs=[files.outputs, files.test, *checked],
        counts={"rows": len(rows), "labelled": sum(r["label"] is not None for r in rows),
                "failed": sum(r["error"] is not None for r in rows) - not_sent - len(plan.oversize),
                "oversize": len(plan.oversize), "not_sent": not_sent, "requests_sent": labelling.sent,
                "from_cache": labelling.cached, "test": len(plan.test)},
        usage={"prompt_tokens": sum(r["prompt_tokens"] for r in rows),
               "completion_tokens": sum(r["completion_tokens"] for r in rows)},
        spent_this_run=round(labelling.budget.spent(), 6),
        stopped_by_max_cost=not_sent > 0,
        prefix_cache=labelling.prefix_cache,
        teacher={"model": config.teacher.model, "urls": config.teacher.urls},
    )


STAGE = Stage("generate", generate, reads=("task", "data", "teacher", "cost"), upstream=None)
