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
class Answer:
    text: str | None
    logprob: float | None = None  # summed log-probability of the answer tokens: the model's confidence
    top_logprobs: list[dict[str, float]] = field(default_factory=list)  # alternatives at the first token
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    error: str | None = None

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def api_key_from_env(variable: str | None) -> str:
    if variable is None:
        return "EMPTY"  # a local vLLM server checks no key
    key = os.environ.get(variable)
    if not key:
        raise UserError(f"environment variable {variable} (teacher.api_key_env) is not set")
    return key


@dataclass(frozen=True)
class Target:
    """Where a model answers: an OpenAI-compatible base URL and the model name it is served under."""

    base_url: str
    model: str
    api_key: str = field(default="EMPTY", repr=False)


class Endpoint:
    """An async client bound to one event loop; create it inside the coroutine that uses it."""

    def __init__(self, target: Target, timeout_s: float = 300, max_retries: int = 4) -> None:
        self.model = target.model
        self.client = openai.AsyncOpenAI(base_url=target.base_url, api_key=target.api_key, timeout=timeout_s,
                                         max_retries=max_retries)

    async def chat(self, messages: list[dict[str, str]], **params: Any) -> Answer:
        return await self._timed(self.client.chat.completions.create, messages=messages, **params)

    async def complete(self, prompt: str, **params: Any) -> Answer:
        return await self._timed(self.client.completions.create, prompt=prompt, **params)

    async def _timed(self, create: Callable[..., Awaitable[Any]], **request: Any) -> Answer:
        start = time.perf_counter()
        try:
            response = await create(model=self.model, **request)
        except openai.APIError as exc:
            return Answer(text=None, latency_ms=_ms_since(start), error=f"{type(exc).__name__}: {exc}")
        answer = _parse_response(response)
        answer.latency_ms = _ms_since(start)
        return answer

    async def close(self) -> None:
        await self.client.close()


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _parse_response(response: Any) -> Answer:
    choice = response.choices[0]
    usage = response.usage
    text = choice.message.content if hasattr(choice, "message") else choice.text
    logprob, top = _logprob_summary(choice.logprobs)
    return Answer(text=text, logprob=logprob, top_logprobs=top,
                  prompt_tokens=usage.prompt_tokens if usage else 0,
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
                         description: str, on_result: Callable[[T, R], None] | None = None) -> list[R]:
    """Run `worker` over `items` with at most `concurrency` in flight; results keep the input order."""
    limit = asyncio.Semaphore(concurrency)
    results: list[R] = [None] * len(items)  # type: ignore[list-item]
    progress = tqdm(total=len(items), desc=description, unit="req", dynamic_ncols=True)

    async def one(index: int, item: T) -> None:
        async with limit:
            result = await worker(item)
        results[index] = result
        if on_result is not None:
            on_result(item, result)
        progress.update()

    try:
        await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
    finally:
        progress.close()
    return results
