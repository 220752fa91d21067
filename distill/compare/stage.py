"""The compare stage (`distill compare`): reads `generate/test.parquet`, `generate/outputs.parquet` (what labelling
cost), the generate and train manifests and `train/adapter/` (and `merged/`); writes `compare/metrics.json`,
`answers.parquet`, `report.md` and `report.html`.

Teacher and student answer the same held-out queries on the same engine, one model at a time (so neither slows
the other). Each is costed at saturation (distill/compare/measure.py), and the verdict follows a stated rule
(distill/compare/decision.py). The teacher's answers to the test queries go through the labelling cache, so a
rerun or a study variant never pays for them twice; the teacher's sweep is stored beside them (table
`teacher_timings` in `generate/cache.sqlite`, distill/compare/timing.py) and reused for the same teacher, queries
and serving, so a study times its teacher once.

Measured: the teacher; the student through its adapter (not with DoRA, which vLLM cannot load) and, where a merged
copy exists, merged; and the student's base model given the teacher's prompt, on a server whose context fits
that prompt (what fine-tuning bought over prompting alone).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distill import cost as costs
from distill.artifacts import read_rows, write_json, write_rows
from distill.compare.build import build_metrics
from distill.compare.measure import (
    Measured,
    answer_all,
    costed_point,
    from_sweep,
    measure_target,
    skipped,
    sweep_requests,
)
from distill.compare.report import write_reports
from distill.compare.timing import load_timing, store_timing, timing_key
from distill.config import Config, TeacherConfig
from distill.errors import UserError
from distill.layout import RunLayout
from distill.stages import Manifest, Stage, StageRecorder, read_manifest
from distill.tasks import Task, make_task
from student.card import update_model_cards
from student.serve import BASE_NAME, serve_adapter, serve_merged, student_requests
from teacher.cache import ResponseCache, request_key
from teacher.client import Answer, Target
from teacher.fingerprint import teacher_fingerprint
from teacher.protocol import cache_prefix, teacher_request
from teacher.recorded import fill_answers
from teacher.rows import TEST_COLUMNS
from teacher.server import VLLMServer, open_teacher

DORA_SKIPPED = "DoRA adapter: vLLM cannot load it, so the student is measured merged only"
BASELINE_SERVED = "base model with the teacher's prompt"


def _sweep(config: Config, target: Target, requests: list[dict[str, Any]], method: str, name: str,
           extra: list[dict[str, Any]]) -> Any:
    compare = config.compare
    return asyncio.run(measure_target(target, requests, method, compare.max_concurrency, compare.latency_slo_ms,
                                      compare.max_failed_share, name, extra))


def sweep_pool(config: Config, layout: RunLayout, texts: list[str]) -> list[str]:
    """Label-pool texts that keep the sweep's requests distinct beyond the test queries (answered, not scored)."""
    import pyarrow.parquet as pq

    wanted = sweep_requests(config.compare.max_concurrency) - len(texts)
    if wanted <= 0:
        return []
    test = set(texts)
    pool = pq.read_table(layout.generate.outputs, columns=["text"]).column("text").to_pylist()
    return list(dict.fromkeys(t for t in pool if t not in test))[:wanted]


def reference_teacher(teacher: TeacherConfig) -> TeacherConfig:
    """The teacher every student is measured against: one greedy answer per query. teacher.samples and
    temperature say how the labels are made, so students trained on labels made different ways share one
    reference, and an answer is reproducible."""
    return teacher.model_copy(update={"temperature": 0.0, "samples": 1})


class TeacherAnswers:
    """The teacher's answers to the test queries, through the labelling cache (keys as generate makes them)."""

    def __init__(self, config: Config, task: Task, layout: RunLayout, texts: list[str]) -> None:
        self.texts = texts
        teacher = reference_teacher(config.teacher)
        self.requests = [teacher_request(task, teacher, t) for t in texts]
        prefix = cache_prefix(config, task, teacher, teacher_fingerprint(config))
        self.keys = [request_key(prefix, t) for t in texts]
        self.path = layout.generate.cache

    def cached(self) -> list[Answer | None]:
        cache = ResponseCache(self.path)
        try:
            found = cache.get_many(self.keys)
        finally:
            cache.close()
        return [found.get(k) for k in self.keys]

    def store(self, answers: list[Answer]) -> None:
        cache = ResponseCache(self.path)
        try:
            cache.put_many(zip(self.keys, answers, strict=True))
        finally:
            cache.close()


def _with_recorded(config: Config, source: TeacherAnswers, answers: list[Answer | None], ids: list[str] | None
                   ) -> list[Answer | None]:
    """The answers the cache lacks, from `teacher.recorded` where it has them (then cached, like a live answer)."""
    if config.teacher.recorded is None or None not in answers:
        return answers
    answers = fill_answers(config, answers, source.texts, ids or source.texts)
    source.store([a or Answer(error="not sent") for a in answers])  # failures are not stored
    return answers


def _refuse_unrecorded(config: Config, texts: list[str], answers: list[Answer | None]) -> None:
    """With recorded answers alone, a test query the file lacks has no teacher answer: scored as a teacher mistake
    it would move the paired difference toward the student, so compare stops instead."""
    missing = [t for t, a in zip(texts, answers, strict=True) if a is None]
    if missing:
        raise UserError(f"{len(missing)} of {len(texts)} test queries have no answer in {config.teacher.recorded} "
                        f"(first: {missing[0][:60]!r}); record them, or set teacher.model or teacher.url so a live "
                        "teacher answers them")


def measure_teacher(config: Config, layout: RunLayout, recorder: StageRecorder, task: Task, texts: list[str],
                    pool: list[str], ids: list[str] | None = None) -> Measured:
    """Cached answers where the cache has them, then recorded ones (teacher.recorded); a teacher we pay by the
    hour is timed by a real pass, or by the stored timing of the same teacher on the same queries
    (distill/compare/timing.py). Recorded answers alone are never timed: they are priced per token."""
    source, extra = TeacherAnswers(config, task, layout, texts), TeacherAnswers(config, task, layout, pool)
    answers = _with_recorded(config, source, source.cached(), ids)
    from_cache = sum(a is not None for a in answers)
    if not config.teacher.live:
        _refuse_unrecorded(config, texts, answers)
    per_token = costs.priced_per_token(config.cost)
    key = timing_key(config, source.keys + extra.keys)
    stored = None if per_token or config.compare.retime_teacher or from_cache < len(answers) else load_timing(
        source.path, key)
    points, log, sent = stored[0] if stored else [], layout.compare.server_log("teacher"), 0
    if config.teacher.live and not (per_token and from_cache == len(answers)) and stored is None:
        with recorder.timed("teacher"), open_teacher(config.teacher, log) as target:
            missing = [i for i, a in enumerate(answers) if a is None]
            if per_token:  # an API's throughput is not ours to cost: only the missing answers are asked for
                fresh = asyncio.run(answer_all(target, [source.requests[i] for i in missing],
                                               config.teacher.concurrency, "teacher"))
                sent = len(missing)
            else:
                result = _sweep(config, target, source.requests, "chat", "teacher", extra.requests)
                fresh, points, sent = [result.answers[i] for i in missing], result.points, result.sent
        for i, answer in zip(missing, fresh, strict=True):
            answers[i] = answer or Answer(error="not sent")
        source.store(answers)
    served = (f"endpoint {', '.join(config.teacher.urls)}" if config.teacher.urls else
              "vLLM" if config.teacher.live else "recorded answers")
    parsed = [task.parse(a.text, config.teacher.rationale).value for a in answers]
    started_here = config.teacher.live and not config.teacher.urls and not stored  # a server with a log of ours
    measured = Measured(config.teacher.name, served, costs.teacher_hourly(config.cost, config.teacher), answers,
                        parsed, points, str(log) if started_here else None, from_cache,
                        timed_at=stored[1] if stored else None, sent=sent).check_failures(
                            config.compare.max_failed_share)
    if points and stored is None and measured.status == "measured":
        store_timing(source.path, key, points)
    return measured


def baseline_server(config: Config, requests: list[dict[str, Any]]) -> Any:
    """The student's server options with a context that fits the teacher's prompt (plus its answer budget),
    counted with the student's own tokenizer, as far as the model's positions allow."""
    from transformers import AutoConfig, AutoTokenizer

    from distill.models import resolve_model
    from teacher.tokens import prompt_token_counts

    server = config.student.server
    path = resolve_model(config.student.model)
    needed = max(prompt_token_counts(AutoTokenizer.from_pretrained(path), requests), default=0) + max(
        r["max_tokens"] for r in requests)
    limit = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None) or needed
    length = max(server.max_model_len or 0, min(needed, limit))
    return server.model_copy(update={"max_model_len": length}) if server.max_model_len else server


def _measured(config: Config, name: str, served_as: str, target: Target, requests: tuple[list[dict], list[dict]],
              method: str, parse: Any, log: Path) -> Measured:
    """`requests`: the test queries' and the pool's that keep the sweep distinct."""
    result = _sweep(config, target, requests[0], method, name, requests[1])
    return from_sweep(config.student.model, served_as, config.cost.student_price_per_hour, result, parse,
                      str(log)).check_failures(config.compare.max_failed_share)


@contextmanager
def _base_server(config: Config, server: Any, log: Path) -> Iterator[Target]:
    """The student's base model alone (no adapter), for the prompt-only baseline."""
    from distill.models import resolve_model

    with VLLMServer(resolve_model(config.student.model), BASE_NAME, server, log) as vllm:
        yield Target((vllm.base_url,), BASE_NAME)


def _adapter_and_baseline(config: Config, layout: RunLayout, recorder: StageRecorder,
                          requests: tuple[list[dict], list[dict]], baseline: tuple[list[dict], list[dict]], parse: Any
                          ) -> dict[str, Measured]:
    """The adapter and the prompt-only base model on one server (vLLM multi-LoRA), whose context fits the
    teacher's prompt; with DoRA, which vLLM cannot load, the base model alone."""
    files, measured = layout.compare, {}
    wide = baseline_server(config, baseline[0]) if baseline[0] else config.student.server
    if config.student.lora.use_dora:
        measured["adapter"] = skipped(config.student.model, "base + LoRA adapter", DORA_SKIPPED)
        if baseline[0]:
            with recorder.timed("baseline"), _base_server(config, wide, files.server_log("baseline")) as base:
                measured["baseline"] = _measured(config, "base, prompted", BASELINE_SERVED, base, baseline, "chat",
                                                 parse, files.server_log("baseline"))
        return measured
    adapter_config = config.model_copy(update={"student": config.student.model_copy(update={"server": wide})})
    with recorder.timed("student"), serve_adapter(adapter_config, layout, files.server_log("student")) as both:
        measured["adapter"] = _measured(config, "student", "base + LoRA adapter (vLLM --enable-lora)", both[0],
                                        requests, "complete", parse, files.server_log("student"))
        if baseline[0]:
            measured["baseline"] = _measured(config, "base, prompted", BASELINE_SERVED, both[1], baseline, "chat",
                                             parse, files.server_log("student"))
    return measured


def measure_students(config: Config, layout: RunLayout, recorder: StageRecorder, task: Task, texts: list[str],
                     pool: list[str]) -> dict[str, Measured]:
    requests = (student_requests(task, config, texts), student_requests(task, config, pool))
    prompt_only = reference_teacher(config.teacher).model_copy(update={"rationale": False})
    baseline = (([teacher_request(task, prompt_only, t) for t in texts],
                 [teacher_request(task, prompt_only, t) for t in pool]) if config.compare.prompt_baseline else ([], []))

    def parse(text: str | None) -> str | None:
        return task.parse(text).value

    measured = _adapter_and_baseline(config, layout, recorder, requests, baseline, parse)
    if trained_merged(layout):
        log = layout.compare.server_log("merged")
        with recorder.timed("merged"), serve_merged(config, layout, log) as target:
            measured["merged"] = _measured(config, "merged", "merged weights (adapter folded in)", target, requests,
                                           "complete", parse, log)
    return measured


def trained_merged(layout: RunLayout) -> bool:
    """Whether the training that made this adapter also wrote `train/merged/`: its manifest lists the files, so a
    folder an earlier training left is never measured as this student."""
    return any(name.startswith("merged/") for name in read_manifest(layout, "train").get("outputs", {}))


def one_off_cost(config: Config, layout: RunLayout) -> dict[str, Any]:
    """Labelling: what every labelled answer cost when it was paid for, whichever run paid. Training: every
    attempt, resumes included."""
    rows = read_rows(layout.generate.outputs)
    labelling = costs.labelling_cost_of_rows(config.cost, rows, config.teacher)
    basis = "each labelled answer, when it was paid for"
    if rows and "serving_s" not in rows[0] and not costs.priced_per_token(config.cost):
        # Outputs written before answers recorded their serving time: this run's labelling time is all we have.
        labelling = costs.labelling_cost_from_manifest(config.cost, read_manifest(layout, "generate"),
                                                       config.teacher)
        basis = "the last generate run only (its outputs predate per-answer serving times)"
    training = costs.training_cost(config.cost, costs.training_seconds(read_manifest(layout, "train")))
    return {"labelling": labelling, "training": training, "total": labelling + training,
            "labelled_rows": len(rows), "labelling_basis": basis}


def compare(config: Config, layout: RunLayout) -> Manifest:
    """Write `compare/metrics.json`, `answers.parquet`, `report.md` and `report.html` (with plots)."""
    read_manifest(layout, "train")
    files = layout.compare
    recorder = StageRecorder(STAGE, config, layout)
    task = make_task(config.task)
    test = read_rows(layout.generate.test, TEST_COLUMNS)
    gold, texts = [row["gold"] for row in test], [row["text"] for row in test]
    pool = sweep_pool(config, layout, texts)
    ids = [row["id"] for row in test]
    measured = {"teacher": measure_teacher(config, layout, recorder, task, texts, pool, ids),
                **measure_students(config, layout, recorder, task, texts, pool)}
    metrics = build_metrics(config, measured, gold, task, one_off_cost(config, layout)).to_json()
    shown = {name: m for name, m in measured.items() if m.status == "measured"}
    write_rows(files.answers, [
        {"id": row["id"], "text": row["text"], "gold": row["gold"],
         **{name: m.predictions[i] for name, m in shown.items()},
         **{f"{name}_logprob": m.answers[i].logprob for name, m in shown.items()}}
        for i, row in enumerate(test)
    ])
    write_json(files.metrics, metrics)
    latencies = {name: _costed_latencies(config, m) for name, m in shown.items()}
    write_reports(metrics, {k: v for k, v in latencies.items() if v}, files.folder, config.name)
    update_model_cards(config, layout, metrics)  # the student's model cards now state these results
    return recorder.finish(outputs=[files.metrics, files.answers, files.report_md, files.report_html],
                           counts={"queries": len(test)})


def _costed_latencies(config: Config, m: Measured) -> list[float]:
    return costed_point(m.points, config.compare.latency_slo_ms).latencies if m.points else []


STAGE = Stage("compare", compare, reads=("task", "teacher", "student", "compare", "cost"), upstream="train",
              also_reads=("generate",),  # the test split, and what labelling cost
              cost=costs.compare_cost, results=lambda layout: json.loads(layout.compare.metrics.read_text()))
