"""One backend (the student's or the teacher's server) as the router asks it: a bounded number of requests in
flight, a deadline that counts the wait for a slot, no retries (a failed student escalates, a failed teacher
degrades, and a client retries faster than a backoff would)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from teacher.client import Answer, Target, parse_response

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass
class Reply:
    """A backend's outcome: the request as sent and the response as received (for the recorded answers), parsed."""

    request: dict[str, Any]
    answer: Answer
    response: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def failed(self) -> bool:
        return self.answer.error is not None


class Backend:
    """Create inside the serving event loop (`start`), close on shutdown."""

    def __init__(self, name: str, target: Target, path: str, concurrency: int, timeout_s: float) -> None:
        self.name, self.target, self.path, self.timeout_s = name, target, path, timeout_s
        self.url = target.base_urls[0].rstrip("/") + path
        self.slots = asyncio.Semaphore(concurrency)
        # The key goes to the backend in this header only: it is never logged or returned.
        self.headers = {"Authorization": f"Bearer {target.api_key}", "Content-Type": "application/json"}
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def body(self, request: dict[str, Any]) -> dict[str, Any]:
        """`request` as the stages build it, as sent: the model named, `extra_body` merged in (as the OpenAI client
        does)."""
        return {"model": self.target.model, **{k: v for k, v in request.items() if k != "extra_body"},
                **request.get("extra_body", {})}

    async def ask(self, request: dict[str, Any]) -> Reply:
        sent = self.body(request)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.slots:
                    data = await self._post(_encode(sent))
        except TimeoutError:
            return Reply(sent, Answer(error=f"{self.name}: no answer in {self.timeout_s:g} s",
                                      latency_ms=_ms(start)))
        except (aiohttp.ClientError, OSError, msgspec.DecodeError, _Refused) as exc:
            return Reply(sent, Answer(error=f"{self.name}: {exc or type(exc).__name__}", latency_ms=_ms(start),
                                      status=getattr(exc, "status", None)))
        answer = parse_response(data)
        answer.latency_ms = _ms(start)
        return Reply(sent, answer, data)

    async def stream(self, sent: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The chunks of a streamed answer to `sent` (a `body`); any failure, before or during, is a
        `BackendFailed`. The deadline counts the wait for a slot and the whole stream."""
        deadline = time.monotonic() + self.timeout_s
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.slots.acquire()
        except TimeoutError as exc:
            raise BackendFailed(f"{self.name}: no answer in {self.timeout_s:g} s") from exc
        assert self.session is not None, "Backend.start() was not awaited"
        payload = _encode({**sent, "stream": True, "stream_options": {"include_usage": True}})
        timeout = aiohttp.ClientTimeout(total=max(deadline - time.monotonic(), 0.001))
        try:
            async with self.session.post(self.url, data=payload, headers=self.headers, timeout=timeout) as response:
                if response.status != 200:
                    raise _Refused(response.status, await response.read())
                async for line in response.content:
                    if line.startswith(b"data: [DONE]"):
                        return
                    if line.startswith(b"data: "):
                        yield _decode(line[6:])
                raise _Cut()
        except TimeoutError as exc:
            raise BackendFailed(f"{self.name}: no whole answer in {self.timeout_s:g} s") from exc
        except (aiohttp.ClientError, OSError, msgspec.DecodeError, _Refused, _Cut) as exc:
            raise BackendFailed(f"{self.name}: {exc or type(exc).__name__}") from exc
        finally:
            self.slots.release()

    async def _post(self, payload: bytes) -> dict[str, Any]:
        assert self.session is not None, "Backend.start() was not awaited"
        async with self.session.post(self.url, data=payload, headers=self.headers) as response:
            raw = await response.read()
            if response.status != 200:
                raise _Refused(response.status, raw)
        return _decode(raw)


class BackendFailed(Exception):
    """A streamed answer that failed; the message names the backend."""


class _Cut(Exception):
    def __init__(self) -> None:
        super().__init__("the stream ended before [DONE]")


class _Refused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300].decode(errors='replace')}")
        self.status = status


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
