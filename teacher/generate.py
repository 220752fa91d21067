"""The generate stage (`distill generate`): reads `data.inputs` (and `data.test`), writes `generate/outputs.parquet`
(one `TeacherRow` per row to label), `generate/test.parquet` (the held-out split) and `generate/cache.sqlite`.

The teacher labels every input row once, with its output format enforced. Rows stream through in chunks
(teacher/stream.py): requests, answers and output rows are never all in memory, and the input split keeps only
each row's text, compactly, with its place in the seeded order (distill/data/inputs.py). Every
answer is in a durable cache within 50 ms of arriving, so a killed run pays again for at most what was in flight
and the last uncommitted group; failed requests are recorded in the outputs with their error and retried by the
next run. A run with failed or unsent rows, or too many invalid answers, is recorded partial (`partial` in its
manifest): `distill run` runs it again, asking only for those (teacher/rerun.py). Cache keys carry the teacher's
fingerprint (teacher/fingerprint.py), so answers of another model, dtype or quantization are never reused.

What each row sends and its cache key are teacher/protocol.py's, the row it writes teacher/rows.py's (filter and
compare read them by the same names), and what a run will send, found before it sends, teacher/survey.py's.
"""

from __future__ import annotations

import gc
import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from distill import cost as costs
from distill.artifacts import write_rows
from distill.config import Config
from distill.layout import GenerateFiles, RunLayout
from distill.stages import Manifest, Stage, StageRecorder
from distill.tasks import Task
from teacher import fidelity, recorded
from teacher.client import Answer
from teacher.fingerprint import stage_fingerprint
from teacher.health import TeacherUnhealthy
from teacher.outputs import row_group_writer
from teacher.protocol import teacher_request
from teacher.rerun import failed_keys, invalid_answer, mark_retry
from teacher.rows import TEACHER_COLUMNS, TEST_COLUMNS, output_row, sample_parser, teacher_schema
from teacher.server import open_teacher, prefix_cache_counters
from teacher.stream import NOT_SENT, Checks, Chunk, Labeller
from teacher.survey import Plan, Survey, make_plan, survey
from teacher.tokens import estimate, load_teacher_tokenizer, prompt_token_counts, refuse_oversize


def _hit_rate(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float] | None:
    if before is None or after is None:
        return None
    queries = after["queries"] - before["queries"]
    hits = after["hits"] - before["hits"]
    return {"hit_tokens": hits, "query_tokens": queries, "hit_rate": hits / queries if queries else 0.0}


def _local_tokenizer(config: Config) -> Any | None:
    # Only a server we start has a context length known here; a running endpoint rejects what does not fit.
    if not config.teacher.live or config.teacher.urls or config.teacher.server.max_model_len is None:
        return None
    return load_teacher_tokenizer(config)


def dry_run(config: Config, layout: RunLayout) -> dict[str, Any]:
    """What `generate` would send and cost, counting the answers already cached (or recorded) as free; sends and
    writes nothing (recorded answers are counted where they are, not put in the cache). Rows no recorded answer
    covers and no live teacher would answer count as oversize ones do."""
    plan = make_plan(config)
    tokenizer = load_teacher_tokenizer(config, convert=False)
    answered, unrecorded = (recorded.recorded_keys(config, plan.examples, plan.prefix, layout.generate.cache)
                            if config.teacher.recorded else (set(), {}))
    # Recorded answers alone: what they lack is asked of no one, so nothing is sent or counted.
    found = (survey(config, plan, layout.generate.cache, tokenizer, count_chars=True,
                    retry=_retry(config, plan, layout.generate), answered=answered) if config.teacher.live
             else Survey(to_send=len(unrecorded)))
    refuse_oversize(config, plan.examples, found.oversize)  # as the run itself would
    found.to_send -= len(unrecorded)
    result = estimate(config, found.to_send, found.prompt_tokens, found.prompt_chars, tokenizer,
                      plan.task.labels if plan.task.single_label else None)
    skipped = len(found.oversize) + len(unrecorded)
    return {**result, "rows": len(plan.examples), "cached": len(plan.examples) - found.to_send - skipped,
            "oversize": len(found.oversize), "not_recorded": len(unrecorded)}


def _from_recorded(config: Config, plan: Plan, cache: Path) -> dict[int, str]:
    """Recorded answers into the cache (teacher.recorded); the rows no one will answer."""
    return recorded.fill_cache(config, plan.examples, plan.prefix, cache) if config.teacher.recorded else {}


class OutputTally:
    """Writes each finished chunk as a row group of `outputs.parquet` and keeps the counts the manifest needs."""

    def __init__(self, task: Task, rationale: bool, write: Callable[[dict[str, list]], None],
                 invalid: Callable[[Answer], bool]) -> None:
        self.task, self.rationale, self.write, self.invalid = task, rationale, write, invalid
        self.counts: Counter[str] = Counter()
        self.serving_s = 0.0

    def __call__(self, chunk: Chunk) -> None:
        # Parses and JSON of repeated answers are made once per chunk: a label task's answers are few distinct texts.
        parse, dumps = sample_parser(self.task, self.rationale), _remembered_dumps()
        rows = [output_row(e, Answer(error=chunk.skipped[i]) if i in chunk.skipped else a, parse, dumps)
                for i, (e, a) in enumerate(zip(chunk.examples, chunk.answers, strict=True))]
        columns = dict(zip(TEACHER_COLUMNS, map(list, zip(*rows, strict=True)), strict=True))
        self.write(columns)
        n, errors = len(rows), columns["error"]
        self.counts.update(rows=n, labelled=n - columns["label"].count(None), errors=n - errors.count(None),
                           not_sent=errors.count(NOT_SENT), truncated=columns["finish_reason"].count("length"),
                           prompt_tokens=sum(columns["prompt_tokens"]),
                           completion_tokens=sum(columns["completion_tokens"]),
                           answered=sum(a is not None and a.error is None for a in chunk.answers),
                           invalid=sum(a is not None and a.error is None and self.invalid(a) for a in chunk.answers),
                           cached_tokens=sum(columns["cached_tokens"]))
        for seconds in columns["serving_s"]:
            self.serving_s += seconds


def _remembered_dumps() -> Callable[[list[str | None]], str]:
    seen: dict[tuple[str | None, ...], str] = {}

    def dumps(values: list[str | None]) -> str:
        key = tuple(values)
        found = seen.get(key)
        if found is None:
            found = seen[key] = json.dumps(values)
        return found

    return dumps


def _retry(config: Config, plan: Plan, files: GenerateFiles) -> Callable[[Answer], bool] | None:
    """Which cached answers to ask for again: the invalid ones, while the retry marker stands (a live teacher only:
    recorded answers are what they are)."""
    if not (config.teacher.live and files.retry_invalid.exists()):
        return None
    return invalid_answer(plan.task, config.teacher.rationale)


def _checks(config: Config, plan: Plan, files: GenerateFiles, tokenizer: Any | None) -> Checks:
    build = partial(teacher_request, plan.task, config.teacher)
    counter = None if tokenizer is None else (lambda text: prompt_token_counts(tokenizer, [build(text)])[0])
    return Checks(invalid_answer(plan.task, config.teacher.rationale), config.teacher.max_invalid_rate, counter,
                  failed_keys(files.outputs, plan.prefix), _retry(config, plan, files) is not None,
                  f"the server's log, {files.server_log}" if not config.teacher.urls else "the teacher server's log")


def _label(config: Config, plan: Plan, found: Survey, files: GenerateFiles, tally: OutputTally, checks: Checks,
           unrecorded: dict[int, str]) -> tuple[Labeller, dict[str, float] | None]:
    """Stream every row through the cache and, for what is missing, the teacher (started only then); rows
    `unrecorded` (recorded answers alone lack them) are written with their reason, like oversize ones."""
    build = partial(teacher_request, plan.task, config.teacher)
    skipped, to_send = {**found.oversize, **unrecorded}, found.to_send - len(unrecorded)
    # Made only once the teacher is up: the labeller opens the cache and its commit thread, which its run closes.
    new_labeller = partial(Labeller, config, plan.examples, plan.prefix, build, skipped, files.cache, tally, checks)
    if to_send == 0:
        labeller = new_labeller()
        labeller.run(None, 0)
        return labeller, None
    with open_teacher(config.teacher, files.server_log) as target:
        labeller = new_labeller()
        before = prefix_cache_counters(target)
        labeller.run(target, to_send)
        return labeller, _hit_rate(before, prefix_cache_counters(target))


@contextmanager
def frozen_heap() -> Iterator[None]:
    """What is loaded by now lives for the whole labelling run: out of the garbage collector's sight, its passes
    stay short. Released afterwards, so a longer process (`distill run`, `study`) collects it as usual."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def generate(config: Config, layout: RunLayout) -> Manifest:
    """Label `data.inputs` (less the held-out test rows) with the teacher; write `generate/outputs.parquet` and
    the test split, `generate/test.parquet`, which filter and compare read."""
    files = layout.generate
    recorder = StageRecorder(STAGE, config, layout)
    plan = make_plan(config)
    with frozen_heap():
        tokenizer = _local_tokenizer(config)
        unrecorded = _from_recorded(config, plan, files.cache)
        found = survey(config, plan, files.cache, tokenizer, retry=_retry(config, plan, files))
        refuse_oversize(config, plan.examples, found.oversize)
        checks = _checks(config, plan, files, tokenizer)  # read before the outputs are replaced
        write_rows(files.test, [{"id": e.id, "text": e.text, "gold": e.gold} for e in plan.test], TEST_COLUMNS)
        try:
            with recorder.timed("teacher"), row_group_writer(files.outputs, teacher_schema()) as write:
                tally = OutputTally(plan.task, config.teacher.rationale, write, checks.invalid)
                labeller, prefix = _label(config, plan, found, files, tally, checks, unrecorded)
        except TeacherUnhealthy as exc:
            mark_retry(files.retry_invalid, str(exc))
            raise
    with recorder.timed("fidelity_check"):  # opt-in: teacher.fidelity_check
        checked = fidelity.run(config, plan.task, plan.examples, found.oversize, files,
                               partial(teacher_request, plan.task), plan.fingerprint)
    counts = tally.counts
    tallied = _manifest_counts(counts, len(found.oversize), len(unrecorded), labeller.counters, len(plan.test))
    partial_because = _partial(config, files, tallied["failed"], counts)
    return recorder.finish(
        outputs=[files.outputs, files.test, *checked],
        counts=tallied,
        partial=partial_because,
        usage={"prompt_tokens": counts["prompt_tokens"], "completion_tokens": counts["completion_tokens"],
               "cached_tokens": counts["cached_tokens"]},
        serving_s=round(tally.serving_s, 3),
        spent_this_run=round(labeller.budget.spent(), 6),
        stopped_by_max_cost=counts["not_sent"] > 0,
        prefix_cache=prefix,
        teacher={"model": config.teacher.name, "urls": config.teacher.urls, "fingerprint": plan.fingerprint,
                 "concurrency_per_replica": config.teacher.concurrency},
    )


def _manifest_counts(counts: Counter[str], oversize: int, unrecorded: int, counters: Any, test: int
                     ) -> dict[str, int]:
    """The manifest's row counts: `failed` is what is left of the errors once every other reason is counted."""
    failed = counts["errors"] - counts["not_sent"] - oversize - counts["truncated"] - counts["invalid"] - unrecorded
    return {"rows": counts["rows"], "labelled": counts["labelled"], "failed": failed, "invalid": counts["invalid"],
            "truncated": counts["truncated"], "oversize": oversize, "not_sent": counts["not_sent"],
            "not_recorded": unrecorded,
            **{name: getattr(counters, name) for name in ("from_cache", "copies", "retried_invalid")},
            "requests_sent": counters.sent, "test": test}


def _partial(config: Config, files: GenerateFiles, failed: int, counts: Counter[str]) -> str | None:
    """Why the run is not complete (rows a rerun would ask for again), or None; sets or clears the marker that
    makes the next run ask again for invalid answers. Rows left unsent by teacher.max_cost do not count: the budget
    is per run, so rerunning would spend it again; a higher max_cost (a new key) sends them."""
    reasons = []
    if failed:
        reasons.append(f"{failed} rows failed")
    share = counts["invalid"] / counts["answered"] if counts["answered"] else 0.0
    if share > config.teacher.max_invalid_rate and config.teacher.live:  # recorded answers cannot be asked again
        reasons.append(f"{share:.0%} of the answers were invalid (> teacher.max_invalid_rate)")
        mark_retry(files.retry_invalid, reasons[-1])
    else:
        files.retry_invalid.unlink(missing_ok=True)
    return "; ".join(reasons) or None


STAGE = Stage("generate", generate, reads=("task", "data", "teacher", "cost"),
              produces=("outputs.parquet", "test.parquet"),
              fingerprint=stage_fingerprint, cost=costs.generate_cost)
