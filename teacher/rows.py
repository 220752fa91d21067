"""The row contract of `generate/outputs.parquet` (`TeacherRow`: one input and the teacher's answer to it) and of
`generate/test.parquet`: written by generate, read by filter and compare by these column names; and how one
answer becomes one row (samples parsed, the majority voted)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from distill.data.inputs import Example
from distill.tasks import Parsed, Task
from teacher.client import Answer
from teacher.stream import NOT_SENT


@dataclass(frozen=True)
class TeacherRow:
    """One row of `generate/outputs.parquet`: an input and the teacher's answer to it."""

    id: str
    text: str
    gold: str | None
    raw: str | None  # the chosen sample's text as the teacher wrote it
    label: str | None  # its canonical answer; None when invalid (or cut off at max_tokens)
    error: str | None
    rationale: str | None
    vote_share: float | None  # share of samples agreeing with the label (None for one sample)
    samples: str  # JSON list of every sample's canonical answer
    logprob: float | None  # summed log-probability of the chosen sample's tokens
    top_logprobs: str  # JSON: the top alternatives at each answer token
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # of the prompt tokens, those served from the provider's prompt cache (billed less)
    latency_ms: float
    finish_reason: str | None  # the chosen sample's: "stop", or "length" where max_tokens cut it off
    serving_s: float  # teacher serving seconds attributed to this answer when it was paid for (0: not paid)


TEACHER_COLUMNS = tuple(f.name for f in fields(TeacherRow))
TEST_COLUMNS = ("id", "text", "gold")  # `generate/test.parquet`: the held-out queries, split once, by generate
TRUNCATED = "truncated: the answer reached teacher.max_tokens"


def teacher_schema() -> Any:
    """The Arrow schema of `outputs.parquet`, from `TeacherRow`'s field types."""
    import pyarrow as pa

    kinds = {"str": pa.string(), "float": pa.float64(), "int": pa.int64()}
    return pa.schema([pa.field(f.name, kinds[str(f.type).split(" ")[0]], nullable="None" in str(f.type))
                      for f in fields(TeacherRow)])


def output_row(example: Example, answer: Answer | None, parse: Callable[[str | None, str | None], Parsed],
               dumps: Callable[[Any], str] = json.dumps) -> tuple[Any, ...]:
    """One `TeacherRow`'s values, in `TEACHER_COLUMNS` order. `parse(text, finish_reason)` reads a sample."""
    answer = answer or Answer(error=NOT_SENT)
    if len(answer.samples) == 1:  # the usual case, without a vote
        sample, share = answer.samples[0], None
        chosen = parse(sample.text, sample.finish_reason)
        parsed = [chosen]
    else:
        parsed = [parse(s.text, s.finish_reason) for s in answer.samples] or [parse(None, None)]
        chosen, share = vote(parsed)
        sample = answer.samples[parsed.index(chosen)] if answer.samples else None
    return (example.id, example.text, example.gold, sample.text if sample else None, chosen.value,
            answer.error or chosen.error, chosen.rationale, share, dumps([p.value for p in parsed]),
            sample.logprob if sample else None, json.dumps(sample.top_logprobs if sample else []),
            answer.prompt_tokens, answer.completion_tokens, answer.cached_tokens, answer.latency_ms,
            sample.finish_reason if sample else None, answer.serving_s)


def vote(parsed: list[Parsed]) -> tuple[Parsed, float | None]:
    """The majority answer among the samples and its share of all samples (None for a single sample)."""
    if len(parsed) == 1:
        return parsed[0], None
    counts = Counter(p.value for p in parsed if p.value is not None)
    if not counts:
        return parsed[0], 0.0
    winner, count = counts.most_common(1)[0]
    return next(p for p in parsed if p.value == winner), count / len(parsed)


def sample_parser(task: Task, rationale: bool) -> Callable[[str | None, str | None], Parsed]:
    """`task.parse` for a sample, remembered for the texts seen (labels repeat): an answer cut off at max_tokens
    is not trusted even where it parses (a JSON object may close early)."""
    seen: dict[tuple[str | None, bool], Parsed] = {}

    def parse(text: str | None, finish_reason: str | None) -> Parsed:
        key = (text, finish_reason == "length")
        found = seen.get(key)
        if found is None:
            found = seen[key] = Parsed(None, TRUNCATED) if key[1] else task.parse(text, rationale)
        return found

    return parse
