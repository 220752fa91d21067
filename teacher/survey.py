"""What a generate run will do, found before anything is sent: its plan (the rows to label, the test split, the
teacher's fingerprint and what every cache key shares) and its survey (the rows the cache lacks, those too long
for the context, and the size of their prompts)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.data.inputs import Example, split_inputs
from distill.tasks import Task, make_task
from teacher.cache import ResponseCache
from teacher.client import Answer
from teacher.fingerprint import teacher_fingerprint
from teacher.protocol import cache_prefix, teacher_request
from teacher.stream import chunks_of
from teacher.tokens import oversize_reasons, prompt_token_counts


@dataclass
class Plan:
    task: Task
    examples: Sequence[Example]  # made as they are read (distill/data/inputs.py Rows)
    test: Sequence[Example]
    prefix: bytes  # what every cache key of this teacher and request shape shares
    fingerprint: dict[str, Any]



def make_plan(config: Config) -> Plan:
    """The rows to label and the teacher's fingerprint (a URL teacher is asked what it serves)."""
    task = make_task(config.task)
    splits = split_inputs(config)
    fingerprint = teacher_fingerprint(config)
    return Plan(task, splits.to_label, splits.test, cache_prefix(config, task, config.teacher, fingerprint),
                fingerprint)


@dataclass
class Survey:
    """What a run will send: rows not cached, those too long for the context, and their prompt size."""

    to_send: int = 0
    oversize: dict[int, str] = field(default_factory=dict)  # row index -> why it is not sent
    prompt_tokens: int | None = None  # of the rows to send, where the teacher's tokenizer is at hand
    prompt_chars: int = 0


def survey(config: Config, plan: Plan, cache_path: Path, tokenizer: Any | None, count_chars: bool = False,
           retry: Callable[[Answer], bool] | None = None, answered: Collection[str] = ()) -> Survey:
    """One pass over the rows, a chunk at a time: which answers the cache lacks (or holds but `retry` asks
    again), `answered` keys aside; only those rows' prompts are built and counted (for the context check and
    estimates), so a cached row is never tokenised again."""
    if not cache_path.exists() and tokenizer is None and not count_chars and not answered:
        return Survey(to_send=len(plan.examples))  # nothing cached, nothing to count: no row need be looked at
    reader = ResponseCache(cache_path) if cache_path.exists() else None
    result = Survey(prompt_tokens=0 if tokenizer is not None else None)
    try:
        for start, part, keys in chunks_of(plan.examples, plan.prefix):
            present = (set() if reader is None else reader.present(keys) if retry is None
                       else {k for k, a in reader.get_many(keys).items() if not retry(a)})
            missing = [i for i, key in enumerate(keys) if key not in present and key not in answered]
            result.to_send += len(missing)
            if tokenizer is None and not count_chars:
                continue
            requests = [teacher_request(plan.task, config.teacher, part[i].text) for i in missing]
            result.prompt_chars += sum(len(str(r["messages"])) for r in requests)
            if tokenizer is not None:
                counts = prompt_token_counts(tokenizer, requests)
                over = oversize_reasons(config, counts, max((r["max_tokens"] for r in requests), default=0))
                result.oversize.update({start + missing[j]: why for j, why in over.items()})
                result.prompt_tokens += sum(n for j, n in enumerate(counts) if j not in over)
                result.to_send -= len(over)
    finally:
        if reader is not None:
            reader.close()
    return result
