"""Answers a user already has, as the teacher (`teacher.recorded`): nothing already paid for is paid again.

Three shapes are read, told apart by their first line:
- a table (CSV, JSONL, Parquet): the input's text (`data.text_column`, or `data.id_column` where set) and the answer
  (`teacher.recorded_answer_column`); the columns `prompt_tokens`, `cached_tokens`, `completion_tokens` and
  `latency_ms` are read where present, so the teacher is priced as it was billed;
- a gateway log (JSONL): one `{"request": {...}, "response": {...}}` chat completion a line; the request's last user
  message is the input, the response's `usage` (with `prompt_tokens_details.cached_tokens`) gives the tokens;
- a Batch API output file (JSONL, lines with `custom_id`), matched to its input file (`teacher.recorded_requests`).

generate puts each recorded answer in its cache under the key a live answer to the same request would have
(teacher/protocol.py), so validation, the filter, cards, manifests and resume treat it as any other answer; compare
reads the teacher's test answers the same way. The key's teacher fingerprint holds the files' bytes
(`identity`), so an edited file is read again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from distill.artifacts import sha256_file
from distill.config import Config, TeacherConfig
from distill.console.progress import say
from distill.data.inputs import Example
from distill.data.readers import iter_rows, where
from distill.errors import UserError
from teacher.cache import ResponseCache
from teacher.client import Answer, Sample, parse_response
from teacher.stream import chunks_of

NOT_RECORDED = "not recorded: teacher.recorded holds no answer for this input"


def identity(teacher: TeacherConfig, key_column: str) -> dict[str, Any]:
    """What the recorded answers are, by content: the files' bytes and the columns read from them."""
    files = [teacher.recorded, teacher.recorded_requests]
    return {"files": [sha256_file(p) for p in files if p is not None],
            "answer_column": teacher.recorded_answer_column, "key_column": key_column}


def key_column(config: Config) -> str:
    return config.data.id_column or config.data.text_column


class Recorded:
    """The recorded answers, by input text (or id, for a table keyed by `data.id_column`)."""

    def __init__(self, config: Config) -> None:
        teacher = config.teacher
        assert teacher.recorded is not None
        self.path = teacher.recorded
        self.by_id = config.data.id_column is not None and _shape(self.path) == "table"
        self.answers: dict[str, Answer] = dict(_read(config))

    def lookup(self, text: str, row_id: str) -> Answer | None:
        return self.answers.get(row_id if self.by_id else text.strip())

    def refuse_without_logprobs(self, distill_weight: float) -> None:
        """Label-level distillation learns from the teacher's probabilities; an answer alone has none."""
        if not distill_weight:
            return
        bare = sum(not a.samples or not a.samples[0].top_logprobs for a in self.answers.values())
        if bare:
            raise UserError(f"{self.path}: {bare} of {len(self.answers)} recorded answers carry no log-probabilities, "
                            "which label-level distillation learns from; set student.distill_weight: 0 (hard labels) "
                            "or record the teacher with logprobs and top_logprobs")


def _shape(path: Path) -> str:
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        return "table"
    with path.open(encoding="utf-8", errors="replace") as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return "table"  # the reader names the bad line
    if isinstance(row, dict) and "request" in row and "response" in row:
        return "log"
    if isinstance(row, dict) and "custom_id" in row:
        return "batch"
    return "table"


def _read(config: Config) -> Iterator[tuple[str, Answer]]:
    teacher = config.teacher
    path = teacher.recorded
    assert path is not None
    shape = _shape(path)
    if shape == "log":
        yield from _log(path)
    elif shape == "batch":
        if teacher.recorded_requests is None:
            raise UserError(f"{path}: a Batch API output file; set teacher.recorded_requests to the batch's input "
                            "file, whose requests it answers (matched by custom_id)")
        yield from _batch(path, teacher.recorded_requests)
    else:
        yield from _table(path, key_column(config), teacher.recorded_answer_column)


def _table(path: Path, key: str, column: str) -> Iterator[tuple[str, Answer]]:
    for index, (row, line) in enumerate(iter_rows(path)):
        if index == 0:
            missing = [c for c in (key, column) if c not in row]
            if missing:
                raise UserError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(row)}); "
                                "set data.text_column / data.id_column or teacher.recorded_answer_column")
        answer, text = row.get(column), row.get(key)
        if _blank(answer) or _blank(text):
            continue  # no answer recorded: the input is listed as not recorded
        place = f"{path}: {where(index, line)}"
        tokens = {name: _count(row, name, place) for name in ("prompt_tokens", "completion_tokens", "cached_tokens")}
        yield str(text).strip(), Answer(samples=[Sample(str(answer), finish_reason="stop")],
                                        latency_ms=_count(row, "latency_ms", place, float), **tokens)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value).strip() == ""


def _count(row: dict[str, Any], column: str, place: str, kind: type = int) -> Any:
    value = row.get(column)
    if _blank(value):
        return 0
    try:
        return kind(float(value))
    except (TypeError, ValueError):
        raise UserError(f"{place}: column {column!r} is {value!r}, not a number") from None


def _log(path: Path) -> Iterator[tuple[str, Answer]]:
    """A gateway's log; a line that is not JSON stops the run with its line (readers.json_line_rows)."""
    for row, line in iter_rows(path, "jsonl"):
        place = f"{path}: line {line}"
        text = _last_user_message(row.get("request"), place)
        answer = _answer(row.get("response"), place)
        if answer is not None:
            yield text, answer


def _batch(path: Path, requests_path: Path) -> Iterator[tuple[str, Answer]]:
    texts = {}
    for row, line in iter_rows(requests_path, "jsonl"):
        texts[str(row.get("custom_id"))] = _last_user_message(row.get("body"), f"{requests_path}: line {line}")
    for row, line in iter_rows(path, "jsonl"):
        place = f"{path}: line {line}"
        custom_id = str(row.get("custom_id"))
        if custom_id not in texts:
            raise UserError(f"{place}: custom_id {custom_id!r} is not in {requests_path} (teacher.recorded_requests); "
                            "is it this batch's input file?")
        response = row.get("response") or {}
        answer = _answer(response.get("body") if response.get("status_code", 200) == 200 else None, place)
        if answer is not None:
            yield texts[custom_id], answer


def _last_user_message(request: Any, place: str) -> str:
    messages = request.get("messages") if isinstance(request, dict) else None
    users = [m for m in messages or [] if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise UserError(f"{place}: the request has no user message (a chat completion request is expected)")
    content = users[-1].get("content")
    if isinstance(content, list):  # content parts: the text ones, joined
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content or "").strip()


def _answer(response: Any, place: str) -> Answer | None:
    """The response's answer; None for a failed request (its input is then not recorded)."""
    if not isinstance(response, dict) or response.get("error") or not response.get("choices"):
        return None
    try:
        return parse_response(response)
    except (KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{place}: the response is not a chat completion ({exc})") from None


def fill_cache(config: Config, examples: Sequence[Example], prefix: bytes, cache_path: Path) -> dict[int, str]:
    """Put the recorded answers the cache lacks in it, under the keys generate reads. Returns the rows (by index)
    with neither a cached nor a recorded answer that no live teacher will answer: they are listed here, and
    written to the outputs with `NOT_RECORDED` as their error, so none is lost."""
    cache, unrecorded = ResponseCache(cache_path), {}
    try:
        for found, lacking in _recorded_for_missing(config, examples, prefix, cache):
            cache.put_many(found)
            unrecorded.update(lacking)
    finally:
        cache.close()
    _say_unrecorded(config, examples, unrecorded)
    return unrecorded


def recorded_keys(config: Config, examples: Sequence[Example], prefix: bytes, cache_path: Path
                  ) -> tuple[set[str], dict[int, str]]:
    """`fill_cache` for a dry run, which writes nothing: the cache keys the recorded answers would fill, and the
    rows no one will answer."""
    cache = ResponseCache(cache_path) if cache_path.exists() else None
    keys: set[str] = set()
    unrecorded: dict[int, str] = {}
    try:
        for found, lacking in _recorded_for_missing(config, examples, prefix, cache):
            keys.update(key for key, _ in found)
            unrecorded.update(lacking)
    finally:
        if cache is not None:
            cache.close()
    _say_unrecorded(config, examples, unrecorded)
    return keys, unrecorded


def _recorded_for_missing(config: Config, examples: Sequence[Example], prefix: bytes, cache: ResponseCache | None
                          ) -> Iterator[tuple[list[tuple[str, Answer]], dict[int, str]]]:
    """A chunk at a time: the recorded answers of the rows `cache` lacks, and the rows with neither that no live
    teacher will answer."""
    recorded = Recorded(config)
    recorded.refuse_without_logprobs(config.student.distill_weight)
    for start, part, keys in chunks_of(examples, prefix):
        present = cache.present(keys) if cache is not None else set()
        found, unrecorded = [], {}
        for i, (example, key) in enumerate(zip(part, keys, strict=True)):
            if key in present:
                continue
            answer = recorded.lookup(example.text, example.id)
            if answer is not None:
                found.append((key, answer))
            elif not config.teacher.live:
                unrecorded[start + i] = NOT_RECORDED
        yield found, unrecorded


def _say_unrecorded(config: Config, examples: Sequence[Example], unrecorded: dict[int, str]) -> None:
    if unrecorded:
        listed = "; ".join(f"{examples[i].id} {examples[i].text[:60]!r}" for i in list(unrecorded)[:10])
        say(f"{len(unrecorded)} of {len(examples)} inputs have no answer in {config.teacher.recorded} and no live "
            "teacher (teacher.model) to ask: left out, each in generate/outputs.parquet with its error. "
            f"{listed}" + (" ..." if len(unrecorded) > 10 else ""))


def fill_answers(config: Config, answers: list[Answer | None], texts: Sequence[str], ids: Sequence[str]
                 ) -> list[Answer | None]:
    """compare: the teacher's test answers the cache lacks, from the recorded file where it has them."""
    recorded = Recorded(config)
    return [a if a is not None else recorded.lookup(t, i) for a, t, i in zip(answers, texts, ids, strict=True)]
