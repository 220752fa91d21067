"""The compare stage (`distill compare`): reads `generate/test.parquet`, `generate/outputs.parquet` (what labelling
cost), the generate and train manifests and `train/adapter/` (and `merged/`); writes `compare/metrics.json`,
`answers.parquet`, `report.md`, `report.html` and the student's model cards with their results
(`adapter_card.md`, `merged_card.md`). It writes nothing outside `compare/`.

Teacher and student answer the same held-out queries on the same engine, one model at a time (so neither slows
the other). Each is costed at saturation (distill/compare/measure.py), and the verdict follows a stated rule
(distill/compare/decision.py). The teacher's answers to the test queries are read from generate's cache where it
has them, and otherwise kept in compare's own store (`compare/teacher_answers.sqlite`, which a study's variants
share with the main run), so a rerun or a study variant never pays for them twice; the teacher's sweep is stored
beside them (distill/compare/timing.py) and reused for the same teacher, queries and serving, so a study times
its teacher once.

Measured (`CONTESTANTS`, distill/compare/contestants.py): the teacher; the student through its adapter (not with
DoRA, which vLLM cannot load) and, where a merged copy exists, merged; and the student's base model given the
teacher's prompt, on a server whose context fits that prompt (what fine-tuning bought over prompting alone).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from distill import cost as costs
from distill.artifacts import column_sums, count_rows, read_batches, read_rows, write_json, write_rows, write_text
from distill.compare.build import build_metrics
from distill.compare.contestants import (
    ADAPTER,
    BASELINE,
    MERGED,
    Contestant,
    Setup,
    measure_all,
    reference_teacher,
    sweep,
)
from distill.compare.measure import Measured, SweepPoint, answer_all, costed_point, sweep_requests
from distill.compare.report import write_reports
from distill.compare.timing import load_timing, store_timing, timing_key
from distill.config import Config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.stages import Manifest, Stage, StageRecorder, read_manifest
from distill.tasks import Task, make_task
from student.card import compared_cards
from teacher.cache import ResponseCache, read_answers, request_key
from teacher.client import Answer
from teacher.fingerprint import teacher_fingerprint
from teacher.protocol import cache_prefix, teacher_request
from teacher.recorded import fill_answers
from teacher.rows import TEST_COLUMNS
from teacher.server import open_teacher


def sweep_pool(config: Config, layout: RunLayout, texts: list[str]) -> list[str]:
    """Label-pool texts that keep the sweep's requests distinct beyond the test queries (answered, not scored)."""
    wanted = sweep_requests(config.compare.max_concurrency) - len(texts)
    if wanted <= 0:
        return []
    test, pool = set(texts), {}
    for batch in read_batches(layout.generate.outputs, columns=["text"]):  # only as far as the sweep needs
        pool.update(dict.fromkeys(row["text"] for row in batch if row["text"] not in test))
        if len(pool) >= wanted:
            break
    return list(pool)[:wanted]


class TeacherAnswers:
    """The teacher's answers to the test queries (keys as generate makes them): read from generate's cache where
    it labelled the same request, never written there; those the teacher or a recorded file answered here are kept
    in compare's own store (with the teacher's timing), so they are never paid for twice."""

    def __init__(self, config: Config, task: Task, layout: RunLayout, texts: list[str]) -> None:
        self.texts = texts
        teacher = reference_teacher(config.teacher)
        self.requests = [teacher_request(task, teacher, t) for t in texts]
        prefix = cache_prefix(config, task, teacher, teacher_fingerprint(config))
        self.keys = [request_key(prefix, t) for t in texts]
        self.generate_cache, self.store_path = layout.generate.cache, layout.compare.teacher_answers

    def cached(self) -> list[Answer | None]:
        found = read_answers(self.generate_cache, self.keys)
        if len(found) < len(self.keys):
            found |= read_answers(self.store_path, [k for k in self.keys if k not in found])
        return [found.get(k) for k in self.keys]

    def store(self, answers: list[Answer]) -> None:
        cache = ResponseCache(self.store_path)
        try:
            cache.put_many(zip(self.keys, answers, strict=True))
        finally:
            cache.close()

    def timing(self, key: str) -> tuple[list[SweepPoint], str] | None:
        """The stored sweep; in a run folder compared before compare kept its own store, generate's cache."""
        return load_timing(self.store_path, key) or load_timing(self.generate_cache, key)


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
    stored = None if per_token or config.compare.retime_teacher or from_cache < len(answers) else source.timing(key)
    points, log, sent = stored[0] if stored else [], layout.compare.server_log("teacher"), 0
    if config.teacher.live and not (per_token and from_cache == len(answers)) and stored is None:
        with recorder.timed("teacher"), open_teacher(config.teacher, log) as target:
            missing = [i for i, a in enumerate(answers) if a is None]
            if per_token:  # an API's throughput is not ours to cost: only the missing answers are asked for
                fresh = asyncio.run(answer_all(target, [source.requests[i] for i in missing],
                                               config.teacher.concurrency, "teacher"))
                sent = len(missing)
            else:
                result = sweep(config, target, source.requests, "chat", "teacher", extra.requests)
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
        store_timing(source.store_path, key, points)
    return measured


def one_off_cost(config: Config, layout: RunLayout) -> dict[str, Any]:
    """Labelling: what every labelled answer cost when it was paid for, whichever run paid. Training: every
    attempt, resumes included."""
    totals = column_sums(layout.generate.outputs, costs.LABELLING_COLUMNS)  # summed a row group at a time
    labelled = count_rows(layout.generate.outputs)
    labelling = costs.labelling_cost_of_rows(config.cost, [totals], config.teacher)
    basis = "each labelled answer, when it was paid for"
    if labelled and "serving_s" not in totals and not costs.priced_per_token(config.cost):
        # Outputs written before answers recorded their serving time: this run's labelling time is all we have.
        labelling = costs.labelling_cost_from_manifest(config.cost, read_manifest(layout, "generate"),
                                                       config.teacher)
        basis = "the last generate run only (its outputs predate per-answer serving times)"
    training = costs.training_cost(config.cost, costs.training_seconds(read_manifest(layout, "train")))
    return {"labelling": labelling, "training": training, "total": labelling + training,
            "labelled_rows": labelled, "labelling_basis": basis}


def compare(config: Config, layout: RunLayout) -> Manifest:
    """Write `compare/metrics.json`, `answers.parquet`, `report.md`, `report.html` (with plots) and the cards."""
    read_manifest(layout, "train")
    files = layout.compare
    recorder = StageRecorder(STAGE, config, layout)
    task = make_task(config.task)
    test = read_rows(layout.generate.test, TEST_COLUMNS)
    texts = [row["text"] for row in test]
    setup = Setup(config, layout, recorder, task, texts, sweep_pool(config, layout, texts), [r["id"] for r in test])
    measured = measure_all(setup, CONTESTANTS)
    metrics = build_metrics(config, measured, [row["gold"] for row in test], task,
                            one_off_cost(config, layout)).to_json()
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
    cards = [files.model_card(student) for student in _write_cards(config, layout, metrics)]
    return recorder.finish(outputs=[files.metrics, files.answers, files.report_md, files.report_html, *cards],
                           counts={"queries": len(test)})


def _write_cards(config: Config, layout: RunLayout, metrics: dict[str, Any]) -> list[str]:
    """Train's model cards with these results, in compare's folder (train's own stay as train hashed them)."""
    cards = compared_cards(config, layout, metrics)
    for student, text in cards.items():
        write_text(layout.compare.model_card(student), text)
    return list(cards)


def _costed_latencies(config: Config, m: Measured) -> list[float]:
    return costed_point(m.points, config.compare.latency_slo_ms).latencies if m.points else []


# The teacher measures itself: its answers may have been paid for already, and how it is served says how it is timed.
TEACHER = Contestant("teacher", "teacher", "vLLM, an endpoint or recorded answers", requests=lambda setup, texts: [],
                     measure=lambda s: measure_teacher(s.config, s.layout, s.recorder, s.task, s.texts, s.pool, s.ids))
CONTESTANTS = (TEACHER, ADAPTER, BASELINE, MERGED)  # measured in this order; metrics.json keys them by name

STAGE = Stage("compare", compare, reads=("task", "teacher", "student", "compare", "cost"),
              consumes=("generate", "train"), produces=("metrics.json",),  # generate: the test split, labelling's cost
              cost=costs.compare_cost, results=lambda layout: json.loads(layout.compare.metrics.read_text()))
