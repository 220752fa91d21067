"""Async requests to OpenAI-compatible endpoints: one pooled HTTP client per replica, each request sent to the
least busy healthy replica.

Connection errors, timeouts, 408/409/429 and 5xx are retried with exponential backoff and jitter, on another
replica where there is one (a replica that fails is rested for a while), so a replica dying mid-run loses no row.
A request that still fails becomes an `Answer` carrying its error and HTTP status, so the caller records it.

aiohttp with msgspec JSON rather than the openai SDK: against an instant local server the SDK managed about 490
requests/s on one core of this machine, aiohttp about 9,000 (bench/generate_client_ceiling.py), and a GPU fleet
answers well over 1,000 a second.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import msgspec

from distill.console import progress as console_progress
from distill.errors import UserError

T = TypeVar("T")
R = TypeVar("R")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

# The openai SDK's names for HTTP errors, so recorded errors read the same as before.
STATUS_NAMES = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError",
                404: "NotFoundError", 409: "ConflictError", 422: "UnprocessableEntityError", 429: "RateLimitError"}
RETRYABLE_STATUS = {408, 409, 429}


@dataclass(slots=True)
class Sample:
    text: str | None
    logprob: float | None = None  # summed log-probability of the sample's tokens: the model's confidence
    top_logprobs: list[dict[str, Any]] = field(default_factory=list)  # alternatives at the first token
    finish_reason: str | None = None  # "stop", or "length" where max_tokens cut the answer off


@dataclass(slots=True)
class Answer:
    """One request's outcome: its samples (one unless `n` > 1), usage and latency, or the error it ended in."""

    samples: list[Sample] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    error: str | None = None
    status: int | None = None  # HTTP status of a failed request; None for connection errors and successes
    serving_s: float = 0.0  # teacher serving seconds attributed to this answer when it was paid for

    @property
    def text(self) -> str | None:
        return self.samples[0].text if self.samples else None

    @property
    def logprob(self) -> float | None:
        return self.samples[0].logprob if self.samples else None

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


class RequestFailed(Exception):
    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.status = status
        self.retryable = status is None or status in RETRYABLE_STATUS or status >= 500


def _failure(status: int, body: bytes) -> RequestFailed:
    kind = STATUS_NAMES.get(status, "InternalServerError" if status >= 500 else "APIStatusError")
    return RequestFailed(kind, f"Error code: {status} - {body[:500].decode(errors='replace')}", status)


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    failures_in_a_row: int = 0
    rested_until: float = 0.0

    def failed(self) -> None:
        self.failures_in_a_row += 1
        self.rested_until = time.monotonic() + min(30.0, 0.5 * 2 ** self.failures_in_a_row)


class Endpoint:
    """Async clients for a target's replicas. Bound to one event loop: create it inside the coroutine using it."""

    def __init__(self, target: Target, timeout_s: float = 300, max_retries: int = 4) -> None:
        self.model = target.model
        self.replicas = [Replica(url.rstrip("/")) for url in target.base_urls]
        self.max_retries = max_retries
        self.headers = {"Authorization": f"Bearer {target.api_key}", "Content-Type": "application/json"}
        # Concurrency is bounded by the caller's workers, so the pool itself sets no limit.
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                             connector=aiohttp.TCPConnector(limit=0))

    async def chat(self, messages: list[dict[str, str]], **params: Any) -> Answer:
        return await self.send("/chat/completions", {"messages": messages, **params})

    async def complete(self, prompt: str, **params: Any) -> Answer:
        return await self.send("/completions", {"prompt": prompt, **params})

    def payload(self, request: dict[str, Any]) -> bytes:
        """A request's body as sent: the model named, `extra_body` merged in, JSON-encoded."""
        extra = request.get("extra_body")
        return _encode({"model": self.model, **{k: v for k, v in request.items() if k != "extra_body"},
                        **(extra or {})})

    async def send(self, path: str, request: dict[str, Any]) -> Answer:
        return await self.send_payload(path, self.payload(request))

    async def send_payload(self, path: str, payload: bytes) -> Answer:
        """Send an encoded body (see `payload`), retrying where that may help; the outcome as an `Answer`."""
        start = time.perf_counter()
        failure: RequestFailed | None = None
        last = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(random.uniform(0, min(8.0, 0.5 * 2 ** attempt)))  # full jitter
            replica = self._pick(avoid=last)
            try:
                answer = parse_response(await self._post(replica, path, payload))
            except RequestFailed as exc:
                failure, last = exc, replica
                if not exc.retryable:
                    break
                replica.failed()
                continue
            replica.failures_in_a_row = 0
            answer.latency_ms = _ms_since(start)
            return answer
        failure = failure or RequestFailed("APIConnectionError", "no attempt")
        return Answer(latency_ms=_ms_since(start), error=str(failure), status=failure.status)

    def _pick(self, avoid: Replica | None) -> Replica:
        """The least busy replica that is not resting, other than `avoid` where there is a choice."""
        if len(self.replicas) == 1:
            return self.replicas[0]
        now = time.monotonic()
        awake = [r for r in self.replicas if r.rested_until <= now and r is not avoid]
        pool = awake or [r for r in self.replicas if r is not avoid] or self.replicas
        return min(pool, key=lambda r: (r.in_flight, r.rested_until))

    async def _post(self, replica: Replica, path: str, payload: bytes) -> dict[str, Any]:
        replica.in_flight += 1
        try:
            async with self.session.post(replica.url + path, data=payload, headers=self.headers) as response:
                raw = await response.read()
                if response.status != 200:
                    raise _failure(response.status, raw)
        except TimeoutError as exc:  # before OSError, of which it is a kind
            raise RequestFailed("APITimeoutError", f"{replica.url}: no answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise RequestFailed("APIConnectionError", f"{replica.url}: {exc or type(exc).__name__}") from exc
        finally:
            replica.in_flight -= 1
        try:
            return _decode(raw)
        except msgspec.DecodeError as exc:
            raise RequestFailed("APIResponseValidationError", f"{replica.url}: not JSON ({exc})", 502) from exc

    async def served_models(self) -> dict[str, list[dict[str, Any]]]:
        """Each replica's `GET /models` listing: proof it is up, and what it serves. A `UserError` names a URL that
        does not answer, refuses the key, or does not serve this target's model."""
        listings = {}
        for replica in self.replicas:
            try:
                async with self.session.get(replica.url + "/models", headers=self.headers,
                                            timeout=aiohttp.ClientTimeout(total=30)) as response:
                    raw = await response.read()
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise UserError(f"teacher at {replica.url} does not answer ({exc or type(exc).__name__}); start it "
                                "or fix teacher.url") from exc
            if response.status in (401, 403):
                raise UserError(f"teacher at {replica.url} refused the API key (HTTP {response.status}); "
                                "check teacher.api_key_env")
            if response.status >= 500:
                raise UserError(f"teacher at {replica.url} fails (HTTP {response.status}): {raw[:300]!r}")
            models = _decode(raw).get("data", []) if response.status == 200 else []
            ids = [m.get("id") for m in models]
            if models and self.model not in ids:
                raise UserError(f"teacher at {replica.url} serves {ids}, not {self.model!r}; set "
                                "teacher.served_model_name to one of them")
            listings[replica.url] = [m for m in models if m.get("id") == self.model]
        return listings

    async def close(self) -> None:
        await self.session.close()


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def parse_response(data: dict[str, Any]) -> Answer:
    samples = []
    for choice in data.get("choices") or []:
        message = choice.get("message")
        text = message.get("content") if message is not None else choice.get("text")
        samples.append(Sample(text, *_logprob_summary(choice.get("logprobs")), choice.get("finish_reason")))
    usage = data.get("usage") or {}
    return Answer(samples=samples, prompt_tokens=usage.get("prompt_tokens") or 0,
                  completion_tokens=usage.get("completion_tokens") or 0)


def _logprob_summary(logprobs: dict[str, Any] | None) -> tuple[float | None, list[dict[str, Any]]]:
    """Summed log-probability of the generated tokens and the top alternatives at the first token.

    Chat responses carry `content` (a list of token records); completion responses carry parallel lists.
    """
    if not logprobs:
        return None, []
    tokens = logprobs.get("content")
    if tokens is not None:
        total = sum(t["logprob"] for t in tokens)
        first = [{"token": a["token"], "logprob": a["logprob"]} for a in (tokens[0].get("top_logprobs") or [])
                 ] if tokens else []
        return total, first
    token_logprobs = [lp for lp in (logprobs.get("token_logprobs") or []) if lp is not None]
    tops = logprobs.get("top_logprobs") or []
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
    progress = console_progress(description, len(items), unit="req")  # a bar at a terminal, plain lines in a log

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
