"""Async requests to an OpenAI-compatible endpoint, a bounded number in flight.

Retries with exponential backoff and jitter on connection errors, timeouts, 429 and 5xx come from the openai
client itself (`max_retries`). A request that still fails becomes an `Answer` carrying its error, so the
caller records it instead of losing the row.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import openai
from tqdm.auto import tqdm

from distill.errors import UserError

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Sample:
    text: str | None
    logprob: float | None = None  # summed log-probability of the sample's tokens: the model's confidence
    top_logprobs: list[dict[str, Any]] = field(default_factory=list)  # alternatives at the first token


@dataclass
class Answer:
    """One request's outcome: its samples (one unless `n` > 1), usage and latency, or the error it ended in."""

    samples: list[Sample] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    error: str | None = None

    @property
    def text(self) -> str | None:
        return self.samples[0].text if self.samples else None

    @property
    def logprob(self) -> float | None:
        return self.samples[0].logprob if self.samples else None

    def as_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Answer:
        return cls(**{**row, "samples": [Sample(**s) for s in row["samples"]]})


def api_key_from_env(variable: str | None) -> str:
    if variable is None:
        return "EMPTY"  # a local vLLM server checks no key
    key = os.environ.get(variable)
    if not key:
        raise UserError(f"environment variable {variable} (teacher.api_key_env) is not set")
    return key


@dataclass(frozen=True)
class Target:
    """Where a model answers: one or more OpenAI-compatible base URLs serving it under one model name."""

    base_urls: tuple[str, ...]
    model: str
    api_key: str = field(default="EMPTY", repr=False)


class Endpoint:
    """Async clients for a target's replicas; each request goes to the replica with the fewest in flight.

    Bound to one event loop: create it inside the coroutine that uses it.
    """

    def __init__(self, target: Target, timeout_s: float = 300, max_retries: int = 4) -> None:
        self.model = target.model
        self.clients = [openai.AsyncOpenAI(base_url=url, api_key=target.api_key, timeout=timeout_s,
                                           max_retries=max_retries) for url in target.base_urls]
        self.in_flight = [0] * len(self.clients)

    async def chat(self, messages: list[dict[str, str]], **params: Any) -> Answer:
        return await self._timed("chat", messages=messages, **params)

    async def complete(self, prompt: str, **params: Any) -> Answer:
        return await self._timed("completions", prompt=prompt, **params)

    async def _timed(self, kind: str, **request: Any) -> Answer:
        replica = min(range(len(self.clients)), key=self.in_flight.__getitem__)
        client = self.clients[replica]
        create = client.chat.completions.create if kind == "chat" else client.completions.create
        self.in_flight[replica] += 1
        start = time.perf_counter()
        try:
            response = await create(model=self.model, **request)
        except openai.APIError as exc:
            return Answer(latency_ms=_ms_since(start), error=f"{type(exc).__name__}: {exc}")
        finally:
            self.in_flight[replica] -= 1
        answer = _parse_response(response)
        answer.latency_ms = _ms_since(start)
        return answer

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _parse_response(response: Any) -> Answer:
    samples = []
    for choice in response.choices:
        text = choice.message.content if hasattr(choice, "message") else choice.text
        samples.append(Sample(text, *_logprob_summary(choice.logprobs)))
    usage = response.usage
    return Answer(samples=samples, prompt_tokens=usage.prompt_tokens if usage else 0,
                  completion_tokens=usage.completion_tokens if usage else 0)


def _logprob_summary(logprobs: Any) -> tuple[float | None, list[dict[str, float]]]:
    """Summed log-probability of the generated tokens and the top alternatives at the first token.

    Chat responses carry `content` (a list of token records); completion responses carry parallel lists.
    """
    if logprobs is None:
        return None, []
    if getattr(logprobs, "content", None) is not None:
        tokens = logprobs.content
        total = sum(t.logprob for t in tokens)
        first = [{"token": a.token, "logprob": a.logprob} for a in (tokens[0].top_logprobs or [])] if tokens else []
        return total, first
    token_logprobs = [lp for lp in (logprobs.token_logprobs or []) if lp is not None]
    tops = logprobs.top_logprobs or []
    first = [{"token": tok, "logprob": lp} for tok, lp in (tops[0] or {}).items()] if tops else []
    return (sum(token_logprobs) if token_logprobs else None), first


async def map_concurrent(items: Sequence[T], worker: Callable[[T], Awaitable[R]], concurrency: int,
                         description: str, on_result: Callable[[int, R], None] | None = None,
                         should_stop: Callable[[], bool] | None = None) -> list[R | None]:
    """Run `worker` over `items` with at most `concurrency` in flight; results keep the input order.

    Once `should_stop()` is true no further item is started (those in flight finish); unstarted items give None.
    """
    limit = asyncio.Semaphore(concurrency)
    results: list[R | None] = [None] * len(items)
    progress = tqdm(total=len(items), desc=description, unit="req", dynamic_ncols=True)

    async def one(index: int, item: T) -> None:
        async with limit:
            if should_stop is not None and should_stop():
                return
            result = await worker(item)
        results[index] = result
        if on_result is not None:
            on_result(index, result)
        progress.update()

    try:
        await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
    finally:
        progress.close()
    return results
