"""Several teacher endpoints and a failing teacher: even use, failover without loss, fail fast, circuit breaker."""

from pathlib import Path

import pytest

from distill.artifacts import read_rows
from distill.config import load_config
from distill.errors import UserError
from distill.layout import RunLayout
from fake_openai import FakeEndpoint
from helpers import DEMO_INPUTS, study_config, write_config
from teacher.client import Answer
from teacher.generate import generate
from teacher.server import free_port
from teacher.stream import Breaker, TeacherFailing


def _config(tmp_path: Path, urls: list[str], rows: int = 40, **teacher: object):
    config = study_config("fake-model", DEMO_INPUTS)
    config["data"]["max_inputs"] = rows
    config["teacher"] = {"model": "fake-model", "url": urls, "concurrency": 2, "max_retries": 2, **teacher}
    return load_config(write_config(tmp_path / "c.yaml", config))


def test_two_endpoints_share_the_rows_evenly(tmp_path: Path) -> None:
    with FakeEndpoint() as first, FakeEndpoint() as second:
        manifest = generate(_config(tmp_path, [first.url, second.url]), RunLayout(tmp_path))
        served = [len(first.requests), len(second.requests)]
    assert sum(served) == 40 and manifest["counts"]["labelled"] == 40
    assert min(served) >= 15, f"uneven: {served}"


def test_an_endpoint_dying_mid_run_hands_its_rows_to_the_other(tmp_path: Path) -> None:
    with FakeEndpoint(stop_after=6) as dying, FakeEndpoint() as healthy:
        manifest = generate(_config(tmp_path, [dying.url, healthy.url]), RunLayout(tmp_path))
        assert dying.answered <= 8 and len(healthy.requests) >= 32
    rows = read_rows(tmp_path / "generate" / "outputs.parquet")
    assert len(rows) == 40 and len({r["id"] for r in rows}) == 40
    assert all(r["label"] == "billing" and r["error"] is None for r in rows), "no row may be lost"
    assert manifest["counts"]["failed"] == 0


def test_a_dead_teacher_is_named_before_anything_is_sent(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(UserError, match=f"teacher at {url} does not answer"):
        generate(_config(tmp_path, [url]), RunLayout(tmp_path))
    assert not (tmp_path / "generate" / "outputs.parquet").exists()


def test_a_request_the_server_refuses_stops_the_run_at_once(tmp_path: Path) -> None:
    with FakeEndpoint(failures=1000, status=400) as fake:  # e.g. a schema its grammar backend rejects
        with pytest.raises(UserError, match="refuses the request itself"):
            generate(_config(tmp_path, [fake.url]), RunLayout(tmp_path))
        assert len(fake.requests) == 1, "a 400 must not be repeated on every row"


def test_the_breaker_stops_a_failing_teacher_and_keeps_what_was_paid_for(tmp_path: Path) -> None:
    import sqlite3

    with FakeEndpoint(fail_after=3) as fake:
        config = _config(tmp_path, [fake.url], max_failures_in_a_row=5, max_retries=0)
        with pytest.raises(TeacherFailing, match="5 requests in a row failed"):
            generate(config, RunLayout(tmp_path))
        sent = len(fake.requests)
    assert sent < 3 + 5 + 2 * 2, "the run stops soon after the breaker trips (the rest are not sent)"
    with sqlite3.connect(tmp_path / "generate" / "cache.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 3
    assert not (tmp_path / "generate" / "manifest.json").exists()
    assert not (tmp_path / "generate" / "outputs.parquet").exists()
    with FakeEndpoint() as fake:
        rerun = generate(_config(tmp_path, [fake.url]), RunLayout(tmp_path))
    assert rerun["counts"]["from_cache"] == 3 and rerun["counts"]["requests_sent"] == 37


def test_the_breaker_trips_on_a_failure_rate_too() -> None:
    breaker = Breaker(in_a_row=1000, max_rate=0.3, window=40)  # judged once 40 // 4 = 10 requests are seen
    for i in range(9):
        breaker.record(Answer(error="boom" if i % 2 else None))
    assert breaker.reason is None, "too few requests seen to judge a rate"
    breaker.record(Answer())
    assert breaker.reason == "40% of the last 10 requests failed (teacher.max_failure_rate=0.3); last: boom"


def test_parallel_servers_are_passed_to_vllm_and_priced_per_accelerator() -> None:
    from distill.config import CostConfig, ServerConfig, TeacherConfig
    from distill.cost import labelling_cost, teacher_gpus
    from teacher.server import server_command

    server = ServerConfig(tensor_parallel_size=2, data_parallel_size=4)
    command = server_command("/m", "teacher", 8000, server)
    assert command[command.index("--tensor-parallel-size") + 1] == "2"
    assert command[command.index("--data-parallel-size") + 1] == "4"
    prices = CostConfig(teacher_price_per_hour=2.0, student_price_per_hour=1, train_price_per_hour=1)
    local = TeacherConfig(model="m", server=server)
    assert teacher_gpus(prices, local) == 8
    assert labelling_cost(prices, 3600, 0, 0, local) == 16.0, "an hour of 8 accelerators at $2"
    assert teacher_gpus(prices, TeacherConfig(model="m", url="http://x/v1")) == 1
    assert teacher_gpus(prices.model_copy(update={"teacher_gpus": 16}), local) == 16
