"""Cost at saturation: the sweep raises requests in flight until queries/s level off, against a fake server with
a simulated capacity (fast, offline); and failed requests make a failed measurement, never a number."""

import asyncio
from types import SimpleNamespace

from distill.compare import measure
from distill.compare.measure import (
    Measured,
    SweepPoint,
    costed_point,
    levels,
    measure_target,
    still_rising,
    sweep,
    sweep_requests,
)
from fake_openai import FakeEndpoint
from teacher.client import Answer, Target

REQUESTS = [{"messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 4} for i in range(12)]


def _sweep(fake: FakeEndpoint, max_concurrency: int, slo_ms: float | None = None, extra: list | None = None):
    target = Target((fake.url,), "fake")
    return asyncio.run(measure_target(target, REQUESTS, "chat", max_concurrency, slo_ms, 0.01, "fake", extra))


def _pool(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"pool {i}"}], "max_tokens": 4} for i in range(n)]


def test_levels_rise_by_four_up_to_the_limit() -> None:
    assert levels(64) == [1, 4, 16, 64]
    assert levels(100) == [1, 4, 16, 64, 100]
    assert levels(1) == [1]


class SimulatedServer:
    """A server that sustains `qps[c]` queries/s at c requests in flight, on a simulated clock: the sweep's clock
    moves on by the time a level's requests take there, so the stopping rule is tested, not this machine's load."""

    def __init__(self, qps: dict[int, float]) -> None:
        self.qps, self.now, self.sent, self.in_flight, self.peak = qps, 0.0, 0, 0, 0

    def perf_counter(self) -> float:
        if self.sent:  # the end of a level: its requests took sent / qps at the concurrency they ran at
            self.now += self.sent / self.qps[self.peak]
        self.sent = self.peak = 0
        return self.now

    async def send(self, **request: object) -> Answer:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0)  # every request of the level is in flight before any returns
        self.in_flight -= 1
        self.sent += 1
        return Answer(latency_ms=1.0)


def test_sweep_stops_where_throughput_levels_off(monkeypatch) -> None:
    """Queries/s rise to 16 in flight and level off at 64 (+1.3%, under the 5% that counts): the sweep stops
    there, never tries 256 (where throughput would rise again), and costs the model at 16."""
    server = SimulatedServer({1: 9.5, 4: 31.0, 16: 39.0, 64: 39.5, 256: 80.0})
    monkeypatch.setattr(measure, "time", SimpleNamespace(perf_counter=server.perf_counter))
    result = asyncio.run(sweep(server.send, REQUESTS, 256, None, 0.01, "simulated"))
    assert [p.concurrency for p in result.points] == [1, 4, 16, 64], "stops at the first level that adds <= 5%"
    assert [p.queries_per_s for p in result.points] == [9.5, 31.0, 39.0, 39.5], "the clock is the simulated one"
    assert costed_point(result.points, None).concurrency == 16 and not still_rising(result.points, None)
    assert all(a is not None and a.error is None for a in result.answers), "every query answered"


def test_latency_target_caps_the_concurrency() -> None:
    with FakeEndpoint(capacity=4, service_s=0.1) as fake:
        result = _sweep(fake, 256, slo_ms=250)
    # At 4 in flight no request waits (p95 near 140 ms); at 16 most wait for a slot (p95 over 300 ms): the sweep
    # stops there and costs the model at 4.
    assert [p.concurrency for p in result.points] == [1, 4, 16]
    assert costed_point(result.points, 250).concurrency == 4


def test_costed_point_is_the_last_that_raised_throughput() -> None:
    def point(c: int, qps: float, p95: float = 10.0) -> SweepPoint:
        return SweepPoint(c, 8, 1.0, qps, {"p50": p95, "p95": p95, "p99": p95}, 0)

    assert costed_point([point(1, 10), point(4, 30), point(16, 31)], None).concurrency == 4
    assert costed_point([point(1, 10), point(4, 30), point(16, 60, p95=500)], 100).concurrency == 4
    assert costed_point([point(1, 10, p95=500)], 100).concurrency == 1


def test_a_model_whose_requests_fail_is_reported_failed() -> None:
    with FakeEndpoint(failures=10_000, status=400) as fake:
        result = _sweep(fake, 16)
    measured = Measured("m", "vLLM", 1.0, [a for a in result.answers if a is not None], [None] * 12, result.points,
                        server_log="/runs/x/compare/student_server.log").check_failures(0.01)
    assert measured.status == "failed"
    assert "12 of 12 test queries failed" in measured.reason and "student_server.log" in measured.reason
    assert "400" in measured.reason
    ok = Measured("m", "vLLM", 1.0, [Answer()] * 200 + [Answer(error="x")], [None] * 201).check_failures(0.01)
    assert ok.status == "measured"


def test_the_sweep_sends_distinct_queries_from_the_pool_and_counts_repeats() -> None:
    """12 test queries and a sweep to 16 in flight (8 + 8 + 32 requests): with the pool, no query is sent twice,
    so none finds its whole prompt in the server's prefix cache; without it, the repeats are counted."""
    assert sweep_requests(16) == 48
    with FakeEndpoint() as fake:
        result = _sweep(fake, 16, extra=_pool(36))
    sent = [r["messages"][-1]["content"] for r in fake.requests]
    assert len(sent) == 1 + 48 and len(set(sent)) == 48, "each query once (the warm-up is the last one sent)"
    assert all(p.repeats == 0 for p in result.points) and len(result.answers) == 12
    assert all(a.text == "billing" for a in result.answers), "the test queries' answers are the ones scored"
    with FakeEndpoint() as fake:
        alone = _sweep(fake, 16)
    assert [p.repeats for p in alone.points] == [0, 4, 32]


def test_a_sweep_still_rising_at_its_top_says_so_and_its_cost_is_at_most() -> None:
    """A server that is never busy (no capacity limit): queries/s rise with every level up to the last one."""
    with FakeEndpoint(capacity=64, service_s=0.05) as fake:
        result = _sweep(fake, 16, extra=_pool(36))
    assert [p.concurrency for p in result.points] == [1, 4, 16]
    assert still_rising(result.points, None) and costed_point(result.points, None).concurrency == 16
    with FakeEndpoint(capacity=4, service_s=0.1) as fake:
        assert not still_rising(_sweep(fake, 256).points, None)
