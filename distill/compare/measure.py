"""Measuring one served model: its answers to the test queries, and the throughput it sustains at saturation.

Cost per query depends on how busy the machine is kept, so no single concurrency is right for every model (a 135M
student is far from saturated at 16 requests in flight; a 70B teacher on 8 GPUs too). The sweep raises the
requests in flight 1, 4, 16, 64, ... up to `compare.max_concurrency` until queries/s stop rising by more than 5%,
or p95 latency passes `compare.latency_slo_ms`; the model is costed at the last level that still raised throughput
(within the latency target). The first answer to each test query is the one scored, so quality and throughput
come from one pass. The sweep sends distinct queries: the test queries, then queries of the label pool (answered,
not scored), so no request finds its whole prompt already in the server's prefix cache (over 300 test queries, 388
of 512 requests at 256 in flight were repeats with a free prefill). Where the pool runs out too, repeats are
counted per level. A sweep whose last level still raised queries/s is not saturated: its cost is an upper bound.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from distill.compare.metrics import latency_percentiles
from teacher.client import Answer, Endpoint, Target, map_concurrent

SATURATION_GAIN = 0.05  # throughput rising by no more than this share is saturated
MIN_REQUESTS_PER_LEVEL = 8


@dataclass
class SweepPoint:
    concurrency: int
    requests: int
    seconds: float
    queries_per_s: float
    latency_ms: dict[str, float]
    failed: int
    latencies: list[float] = field(default_factory=list, repr=False)
    repeats: int = 0  # requests whose query this sweep had already sent (its prefix cached whole)


def levels(max_concurrency: int) -> list[int]:
    """1, 4, 16, 64, ... up to `max_concurrency`, which is always the last level."""
    found = [1]
    while found[-1] * 4 < max_concurrency:
        found.append(found[-1] * 4)
    return found + ([max_concurrency] if max_concurrency > found[-1] else [])


def costed_point(points: list[SweepPoint], slo_ms: float | None) -> SweepPoint:
    """The level the model is costed at: the last that raised queries/s by more than 5% over the one before,
    among levels within the latency target (the first level if none is)."""
    within = [p for p in points if slo_ms is None or p.latency_ms["p95"] <= slo_ms] or points[:1]
    chosen = within[0]
    for point in within[1:]:
        if point.queries_per_s > chosen.queries_per_s * (1 + SATURATION_GAIN):
            chosen = point
        else:
            break
    return chosen


def sweep_requests(max_concurrency: int) -> int:
    """Requests the whole sweep sends when it runs to its top level: that many distinct queries avoid repeats."""
    return sum(max(MIN_REQUESTS_PER_LEVEL, 2 * c) for c in levels(max_concurrency))


def still_rising(points: list[SweepPoint], slo_ms: float | None) -> bool:
    """Whether the costed level is the last one tried and it still raised queries/s: the model was not shown
    saturated, so its cost per query is at most the one measured."""
    return len(points) > 1 and costed_point(points, slo_ms) is points[-1]


def _saturated(points: list[SweepPoint], slo_ms: float | None, max_failed_share: float) -> bool:
    last = points[-1]
    if last.failed > max_failed_share * last.requests:
        return True  # a failing server is measured no further; the failure is reported
    if slo_ms is not None and last.latency_ms["p95"] > slo_ms:
        return True
    return len(points) > 1 and last.queries_per_s <= points[-2].queries_per_s * (1 + SATURATION_GAIN)


@dataclass
class Sweep:
    answers: list[Answer | None]  # the first answer to each query (None where the query was not sent)
    points: list[SweepPoint]
    sent: int


async def sweep(send: Callable[..., Awaitable[Answer]], requests: list[dict[str, Any]], max_concurrency: int,
                slo_ms: float | None, max_failed_share: float, description: str,
                extra: list[dict[str, Any]] | None = None) -> Sweep:
    """Raise the requests in flight until saturation; every query is answered at least once. `extra` requests
    (unscored) follow the test queries so that the sweep's requests stay distinct."""
    n, pool = len(requests), requests + (extra or [])
    answers: list[Answer | None] = [None] * len(pool)
    points: list[SweepPoint] = []
    cursor = 0
    for concurrency in levels(max_concurrency):
        size = max(MIN_REQUESTS_PER_LEVEL, 2 * concurrency)
        batch = [(cursor + i) % len(pool) for i in range(size)]
        repeats = sum(cursor + i >= len(pool) for i in range(size))
        cursor += size
        points.append(await _level(send, pool, batch, concurrency, answers, f"{description} x{concurrency}"))
        points[-1].repeats = repeats
        if _saturated(points, slo_ms, max_failed_share):
            break
    missing = [i for i, a in enumerate(answers[:n]) if a is None]
    if missing:  # fewer sweep requests than queries: the rest at the costed level
        await _level(send, pool, missing, costed_point(points, slo_ms).concurrency, answers, description)
    return Sweep(answers[:n], points, cursor + len(missing))


async def _level(send: Callable[..., Awaitable[Answer]], requests: list[dict[str, Any]], batch: list[int],
                 concurrency: int, answers: list[Answer | None], description: str) -> SweepPoint:
    start = time.perf_counter()
    results = await map_concurrent([requests[i] for i in batch], lambda r: send(**r), concurrency, description)
    seconds = max(time.perf_counter() - start, 1e-9)
    for i, result in zip(batch, results, strict=True):
        if answers[i] is None:
            answers[i] = result
    done = [r for r in results if r is not None]
    latencies = [a.latency_ms for a in done]
    return SweepPoint(concurrency, len(batch), round(seconds, 3), round(len(batch) / seconds, 3),
                      latency_percentiles(latencies), sum(a.error is not None for a in done), latencies)


async def measure_target(target: Target, requests: list[dict[str, Any]], method: str, max_concurrency: int,
                         slo_ms: float | None, max_failed_share: float, description: str,
                         extra: list[dict[str, Any]] | None = None) -> Sweep:
    """The sweep against one endpoint, after one untimed warm-up request (first-request compilation and caches
    are not what a busy server pays)."""
    endpoint = Endpoint(target)
    send = endpoint.chat if method == "chat" else endpoint.complete
    try:
        await send(**(extra or requests)[-1])  # the query the sweep sends last, if at all
        result = await sweep(send, requests, max_concurrency, slo_ms, max_failed_share, description, extra)
        result.sent += 1  # the warm-up was sent too
        return result
    finally:
        await endpoint.close()


async def answer_all(target: Target, requests: list[dict[str, Any]], concurrency: int, description: str
                     ) -> list[Answer | None]:
    """Plain answers, no timing: for a teacher priced per token, whose throughput is not ours to cost."""
    endpoint = Endpoint(target)
    try:
        return await map_concurrent(requests, lambda r: endpoint.chat(**r), concurrency, description)
    finally:
        await endpoint.close()


@dataclass
class Measured:
    """What compare learnt of one model: its answer to each test query and its throughput sweep."""

    model: str
    served_as: str
    price_per_hour: float
    answers: list[Answer] = field(default_factory=list)
    predictions: list[str | None] = field(default_factory=list)
    points: list[SweepPoint] = field(default_factory=list)
    server_log: str | None = None
    from_cache: int = 0
    status: str = "measured"  # "measured", "failed" or "skipped"
    reason: str | None = None
    timed_at: str | None = None  # when the sweep was measured, where a stored one was reused
    sent: int = 0  # requests sent to it in this run: the sweep's, and any not cached

    def check_failures(self, max_failed_share: float) -> Measured:
        """Mark the model failed where more than `max_failed_share` of its requests failed, naming the first
        error and the server log: a failed measurement is never reported as a number."""
        errors = [a.error for a in self.answers if a.error is not None]
        shares = [len(errors) / max(len(self.answers), 1), *[p.failed / p.requests for p in self.points]]
        if max(shares) > max_failed_share:
            first = errors[0] if errors else "requests failed during the throughput sweep"
            log = f"; server log {self.server_log}" if self.server_log else ""
            self.status = "failed"
            self.reason = f"{len(errors)} of {len(self.answers)} test queries failed; first error: {first}{log}"
        return self


def skipped(model: str, served_as: str, reason: str) -> Measured:
    return Measured(model, served_as, 0.0, status="skipped", reason=reason)


def from_sweep(model: str, served_as: str, price_per_hour: float, result: Sweep, parse: Callable[[str | None],
               str | None], server_log: str | None) -> Measured:
    answers = [a if a is not None else Answer(error="not sent") for a in result.answers]
    return Measured(model, served_as, price_per_hour, answers, [parse(a.text) for a in answers], result.points,
                    server_log, sent=result.sent)
