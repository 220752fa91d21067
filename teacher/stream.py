"""Labelling as a stream, so memory stays flat however many rows there are.

Rows go through in chunks, in order. A chunk's cached answers are read in one query; its other rows go to a fixed
pool of workers (`teacher.concurrency` per replica), which build each request only when they send it. Answers are
committed to the cache in groups by a thread of their own (teacher/cache.py), and a finished chunk is handed to
`sink` (a row group of the outputs) and forgotten. A bounded window of chunks is open at a time.

The first request to send goes alone: if the teacher refuses it (a 4xx: a schema its grammar backend rejects, a
wrong model name) or is down, the run stops at once, naming the URL, instead of repeating that on every row; it is
a row that did not fail in an earlier run, since one row the teacher refuses must not stop every later run. A
circuit breaker then stops the run when too many requests in a row, or too large a share, fail, and a health check
(teacher/health.py) when the answers that arrive look like a broken server's: what was paid for is in the cache,
and the caller exits non-zero with the reason. Copies of one text in the open window are sent once.

Every task (producer, sink, workers, ticker, and through them the cache's commit thread) is watched: an exception
in any of them stops the run at once rather than leaving the others waiting on it.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from distill import cost as costs
from distill.config import Config
from distill.console import progress as console_progress
from distill.data.inputs import Example
from distill.errors import UserError
from teacher.cache import CacheWriter, ResponseCache, request_key
from teacher.client import Answer, Endpoint, Target
from teacher.health import Breaker, Health, TeacherFailing, TeacherUnhealthy

CHUNK_ROWS = 4096
_encode = msgspec.json.Encoder().encode
GC_CHUNKS = 8  # cycles (a failed request's traceback) wait at most this many chunks to be collected
WINDOW_CHUNKS = 4  # chunks open at once: enough to keep every worker busy while the oldest one finishes
NOT_SENT = "not sent: teacher.max_cost reached"


class Budget:
    """Money spent on requests sent in this run: per-token prices where set, else serving time by the hour."""

    def __init__(self, config: Config) -> None:
        self.cost, self.teacher = config.cost, config.teacher
        self.limit = config.teacher.max_cost
        self.started = time.monotonic()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0

    def add(self, answer: Answer) -> None:
        self.prompt_tokens += answer.prompt_tokens
        self.completion_tokens += answer.completion_tokens
        self.cached_tokens += answer.cached_tokens

    def spent(self) -> float:
        return costs.labelling_cost(self.cost, time.monotonic() - self.started, self.prompt_tokens,
                                    self.completion_tokens, self.teacher, self.cached_tokens)

    def exhausted(self) -> bool:
        return self.limit is not None and self.spent() >= self.limit


@dataclass
class Chunk:
    start: int  # index of its first row among the rows to label
    examples: list[Example]
    keys: list[str]
    answers: list[Answer | None]
    skipped: dict[int, str]  # row within the chunk -> why it is not sent (oversize)
    waiting: int = 0
    owned: list[str] = field(default_factory=list)  # keys first sent from this chunk (copies wait on them)
    done: asyncio.Event = field(default_factory=asyncio.Event)


def chunks_of(examples: Sequence[Example], prefix: bytes) -> Iterator[tuple[int, list[Example], list[str]]]:
    for start in range(0, len(examples), CHUNK_ROWS):
        part = examples[start:start + CHUNK_ROWS]
        yield start, part, [request_key(prefix, e.text) for e in part]


class Payloads:
    """Request bodies as bytes: the encoded request is split around its text once, so a row costs one string
    escape and a join rather than building and encoding a whole request. Each chunk's first row to send is also
    built in full and compared; a task whose request does not hold the text once, as it is, is built in full."""

    MARK = "\x00distill-text\x00"

    def __init__(self, build: Callable[[str], dict], encode: Callable[[dict], bytes]) -> None:
        self.build, self.encode = build, encode
        whole, mark = encode(build(self.MARK)), _encode_text(self.MARK)
        self.parts = whole.split(mark) if whole.count(mark) == 1 else None

    def __call__(self, text: str) -> bytes:
        if self.parts is None:
            return self.encode(self.build(text))
        return self.parts[0] + _encode_text(text) + self.parts[1]

    def check(self, text: str) -> None:
        try:
            whole = self.encode(self.build(text))
        except Exception:  # noqa: BLE001 - that row's own error, recorded when it is sent
            whole = None
        if self.parts is not None and self(text) != whole:
            self.parts = None


def _encode_text(text: str) -> bytes:
    return _encode(text)[1:-1]  # the JSON string's content, without its quotes


@dataclass
class Counters:
    sent: int = 0  # requests sent, whatever their outcome
    received: int = 0  # answers received (and cached)
    from_cache: int = 0
    copies: int = 0  # rows answered by the request of an earlier copy of their text in the open window
    retried_invalid: int = 0  # cached invalid answers asked again (teacher/generate.py: retry-invalid)


@dataclass
class Checks:
    """What the labeller checks answers against, from the task and the teacher's tokenizer."""

    invalid: Callable[[Answer], bool]  # an answer empty or not valid for the task (a cut-off one is not counted)
    max_invalid_rate: float
    prompt_tokens: Callable[[str], int] | None = None  # the tokenizer's count of a row's prompt, where at hand
    failed_before: frozenset[str] = frozenset()  # keys of rows that failed in an earlier run: never the probe
    retry_invalid: bool = False  # ask again for cached answers that are invalid
    where: str = "the teacher"  # where to look when the teacher seems broken (the server log, or its URL)


class Labeller:
    """One run of the stream. `build` makes a row's request; `sink` receives each finished chunk in order."""

    def __init__(self, config: Config, examples: Sequence[Example], prefix: bytes, build: Callable[[str], dict],
                 oversize: dict[int, str], cache_path: Any, sink: Callable[[Chunk], None], checks: Checks) -> None:
        self.config, self.examples, self.prefix, self.build = config, examples, prefix, build
        self.oversize, self.sink, self.checks = oversize, sink, checks
        self.health = Health(checks.invalid, checks.max_invalid_rate)
        self.copies: dict[str, list[tuple[Chunk, int]]] = {}  # key in flight -> other rows of the same text
        self.retried: set[str] = set()  # keys whose cached invalid answer is asked again
        self.answered_keys: list[str] = []  # answers received in this run, in order
        self.settled: dict[str, Answer] = {}  # answers of keys owned by chunks not yet drained
        self.reader = ResponseCache(cache_path)
        self.writer = CacheWriter(cache_path)
        self.budget = Budget(config)
        teacher = config.teacher
        self.breaker = Breaker(teacher.max_failures_in_a_row, teacher.max_failure_rate)
        self.counters = Counters()
        self.endpoint: Endpoint | None = None
        self.payloads: Payloads | None = None
        self.progress: Any = None

    def run(self, target: Target | None, to_send: int) -> Counters:
        """Label every row (sending only what is not cached); raises `TeacherFailing` if the breaker trips,
        `TeacherUnhealthy` if the health check does."""
        collecting = gc.isenabled()
        # The young generations are collected every GC_CHUNKS finished chunks (_drain) instead of every 700
        # allocations: each answer makes a few dozen short-lived objects, almost never a cycle, and automatic
        # passes over the open window's live ones cost about a sixth of the loop's time.
        gc.disable()
        try:
            run_loop(self._run(target, to_send))
        finally:
            if collecting:
                gc.enable()
            self.reader.close()
            self.writer.close()  # everything paid for is committed, however the run ends
        urls = ', '.join(target.base_urls) if target else '?'
        if self.health.reason is not None:
            raise TeacherUnhealthy(f"teacher at {urls}: stopped, the server looks broken: {self.health.reason}. Read "
                                   f"{self.checks.where}, restart the teacher, and rerun: {self._forget_if_blind()}")
        if self.breaker.reason is not None:
            raise TeacherFailing(f"teacher at {', '.join(target.base_urls) if target else '?'}: stopped, "
                                 f"{self.breaker.reason}. The {self.counters.received} answers received are cached; "
                                 "fix the teacher and rerun to continue.")
        return self.counters

    def _forget_if_blind(self) -> str:
        """A server that does not read its prompts answers valid-looking labels all the same: every answer it gave
        this run leaves the cache, so the rerun asks for them again. Otherwise only the invalid ones are."""
        if not self.health.prompts_ignored:
            return "the invalid answers will be asked again"
        cache = ResponseCache(self.reader.path)
        try:
            cache.delete_many(self.answered_keys)
        finally:
            cache.close()
        return f"the {len(self.answered_keys)} answers it gave in this run were removed and will be asked again"

    async def _run(self, target: Target | None, to_send: int) -> None:
        teacher = self.config.teacher
        work: asyncio.Queue = asyncio.Queue()
        ready: asyncio.Queue = asyncio.Queue(maxsize=WINDOW_CHUNKS)
        tasks = [asyncio.create_task(self._drain(ready))]
        if target is not None and to_send:
            self.endpoint = Endpoint(target, teacher.request_timeout_s, teacher.max_retries)
            self.payloads = Payloads(self.build, self.endpoint.payload)
            # A bar at a terminal, plain timestamped lines in a log (distill/console).
            self.progress = console_progress("teacher labels", to_send, unit="req")
            # `concurrency` is per replica: each URL, and each data-parallel engine of a server started here.
            engines = 1 if teacher.urls else teacher.server.data_parallel_size
            workers = teacher.concurrency * len(target.base_urls) * engines
            tasks += [asyncio.create_task(self._work(work)) for _ in range(workers)]
            tasks.append(asyncio.create_task(self._tick()))
        tasks.append(asyncio.create_task(self._produce(work, ready, target)))
        try:
            await _supervise(tasks, tasks[0])
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.endpoint is not None:
                await self.endpoint.close()
            if self.progress is not None:
                self.progress.close()

    async def _produce(self, work: asyncio.Queue, ready: asyncio.Queue, target: Target | None) -> None:
        probing = True
        for start, part, keys in chunks_of(self.examples, self.prefix):
            if self._stop_reason() is not None:
                break  # the rows not reached are neither sent nor written: the run stops with the reason
            chunk, missing = self._open(start, part, keys)
            if missing and self.payloads is not None:
                self.payloads.check(part[missing[0]].text)
            await ready.put(chunk)  # in row order; waits while the window is full
            if not missing:
                chunk.done.set()
            held: list[int] = []  # rows that failed before, sent once the probe has answered
            for i in missing:
                key = keys[i]
                if key in self.settled or key in self.copies:
                    self._copy(chunk, i)
                    continue
                self.copies[key] = []
                chunk.owned.append(key)
                if probing and key in self.checks.failed_before:
                    held.append(i)
                elif probing:  # alone, before any other: a refusal or a dead teacher stops the run here
                    probing = False
                    await self._probe(chunk, i, target)
                else:
                    work.put_nowait((chunk, i))
            probing = probing and not held  # a chunk of rows that all failed before goes without a probe
            for i in held:
                work.put_nowait((chunk, i))
            await asyncio.sleep(0)
        await ready.put(None)

    def _open(self, start: int, part: list[Example], keys: list[str]) -> tuple[Chunk, list[int]]:
        """A chunk with its cached answers in place, and its rows still to send."""
        # Looked up even on a first run: a text repeated a few chunks on is answered from the cache, not paid again.
        cached = self.reader.get_many([k for i, k in enumerate(keys) if start + i not in self.oversize])
        if self.checks.retry_invalid:
            kept = {k: a for k, a in cached.items() if not self.checks.invalid(a)}
            self.counters.retried_invalid += len(cached) - len(kept)
            self.retried.update(cached.keys() - kept.keys())
            cached = kept
        chunk = Chunk(start, part, keys, [cached.get(k) for k in keys],
                      {i: self.oversize[start + i] for i in range(len(part)) if start + i in self.oversize})
        self.counters.from_cache += len(cached)
        missing = [i for i in range(len(part)) if chunk.answers[i] is None and i not in chunk.skipped]
        chunk.waiting = len(missing)
        return chunk, missing

    def _copy(self, chunk: Chunk, i: int) -> None:
        """A row whose text is already asked for in the open window: it takes that request's answer."""
        self.counters.copies += 1
        answer = self.settled.get(chunk.keys[i])
        if answer is None:
            self.copies[chunk.keys[i]].append((chunk, i))
        else:
            self._settle(chunk, i, answer)

    async def _probe(self, chunk: Chunk, i: int, target: Target | None) -> None:
        answer = await self._ask(chunk, i)
        if answer.error is not None and target is not None:
            raise UserError(f"teacher at {', '.join(target.base_urls)}: the first request failed: {answer.error}; "
                            f"{_first_failure_hint(answer.status)}")
        self._answered(chunk, i, answer)

    async def _ask(self, chunk: Chunk, i: int) -> Answer:
        assert self.endpoint is not None and self.payloads is not None
        try:
            answer = await self.endpoint.send_payload("/chat/completions", self.payloads(chunk.examples[i].text))
        except Exception as exc:  # noqa: BLE001 - a row that cannot be asked is that row's error, not a hang
            answer = Answer(error=f"{type(exc).__name__}: {exc}")
        self.counters.sent += 1
        if answer.error is None:
            self.writer.add(chunk.keys[i], answer)
            self.answered_keys.append(chunk.keys[i])
            self.counters.received += 1
            self._check_health(chunk.examples[i].text, answer, retried=chunk.keys[i] in self.retried)
        self.budget.add(answer)
        self.breaker.record(answer)
        return answer

    def _check_health(self, text: str, answer: Answer, retried: bool) -> None:
        # A row asked again because its cached answer was invalid may truly be one the teacher answers badly: such
        # rows would fill the window and stop every retry run, so only the token count judges them.
        if not retried:
            self.health.record(answer)
        if self.checks.prompt_tokens is not None and self.health.wants_tokens(self.counters.received - 1):
            self.health.check_tokens(answer.prompt_tokens, self.checks.prompt_tokens(text))

    def _stop_reason(self) -> str | None:
        return self.health.reason or self.breaker.reason

    async def _work(self, work: asyncio.Queue) -> None:
        while True:
            chunk, i = await work.get()
            if (reason := self._stop_reason()) is not None:
                answer = Answer(error=f"not sent: {reason}")
            elif self.budget.exhausted():
                answer = Answer(error=NOT_SENT)
            else:
                answer = await self._ask(chunk, i)
            self._answered(chunk, i, answer)

    def _answered(self, chunk: Chunk, i: int, answer: Answer) -> None:
        """Settle a sent row and the copies of its text that wait on it."""
        key = chunk.keys[i]
        self.settled[key] = answer
        self._settle(chunk, i, answer)
        for other, j in self.copies.pop(key, ()):
            self._settle(other, j, answer)

    def _settle(self, chunk: Chunk, i: int, answer: Answer) -> None:
        chunk.answers[i] = answer
        chunk.waiting -= 1
        if chunk.waiting == 0:
            chunk.done.set()

    async def _drain(self, ready: asyncio.Queue) -> None:
        """Hand finished chunks to the sink in row order; their answers' serving seconds are shared out first."""
        drained = 0
        while (chunk := await ready.get()) is not None:
            await chunk.done.wait()
            self.writer.flush()
            self.sink(chunk)
            for key in chunk.owned:
                self.settled.pop(key, None)
            drained += 1
            if drained % GC_CHUNKS == 0:
                gc.collect(1)

    async def _tick(self) -> None:
        self.writer.start_clock()
        self.budget.started = time.monotonic()
        shown = 0
        while True:
            await asyncio.sleep(0.05)
            self.writer.flush()
            self.progress.update(self.counters.sent - shown)
            shown = self.counters.sent


async def _supervise(tasks: list[asyncio.Task], last: asyncio.Task) -> None:
    """Wait for `last` to finish; the first exception in any task (a sink's write error, a refused probe, a worker
    or the ticker meeting a failed cache commit) is raised at once, so no task is left waiting on a dead one."""
    watched = set(tasks)
    while last in watched:
        done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()


def _first_failure_hint(status: int | None) -> str:
    if status in (401, 403):
        return "the endpoint refused the API key (teacher.api_key_env)"
    if status is not None and 400 <= status < 500:
        return ("the server refuses the request itself, and would refuse every row: check the model name, the "
                "task's schema or labels, and teacher.max_tokens")
    return "is it running and healthy? (tried with teacher.max_retries retries)"


def run_loop(coroutine: Any) -> Any:
    """uvloop where installed (it comes with vLLM's server): about a third less CPU per request here."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
