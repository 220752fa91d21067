"""The teacher's timing is measured once per teacher, test queries and sweep settings: a study's variants and a
rerun reuse it from compare's store (in run folders made before that store, the labelling cache) instead of
serving the teacher again, and say so (fast, offline)."""

import sqlite3
from pathlib import Path

from distill.compare import stage as compare_stage
from distill.compare.measure import SweepPoint
from distill.compare.timing import load_timing, store_timing, timing_key
from distill.config import Config
from distill.layout import RunLayout
from distill.stages import StageRecorder
from distill.tasks import make_task
from fake_openai import FakeEndpoint
from helpers import DEMO_INPUTS, study_config

TEXTS = [f"My invoice {i} shows a charge I do not recognise" for i in range(10)]


def _config(url: str, **compare: object) -> Config:
    raw = study_config("fake-model", DEMO_INPUTS)
    raw["teacher"] = {"model": "fake-model", "url": url, "concurrency": 4, "max_tokens": 8}
    raw["compare"] = {"max_concurrency": 16, **compare}
    return Config.model_validate(raw)


def _measure(config: Config, layout: RunLayout):
    recorder = StageRecorder(compare_stage.STAGE, config, layout)
    return compare_stage.measure_teacher(config, layout, recorder, make_task(config.task), TEXTS, [])


def test_stored_timing_round_trips_and_is_keyed_by_what_it_measured(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    config = _config("http://127.0.0.1:9/v1")
    key = timing_key(config, ["a", "b"])
    point = SweepPoint(4, 8, 0.5, 16.0, {"p50": 1.0, "p95": 2.0, "p99": 3.0}, 0, [1.0, 2.0])
    assert load_timing(cache, key) is None
    store_timing(cache, key, [point])
    points, measured_at = load_timing(cache, key)
    assert points == [point] and measured_at.startswith("20")
    other_hardware = config.model_copy(update={"cost": config.cost.model_copy(update={"hardware": "8x H100"})})
    assert timing_key(other_hardware, ["a", "b"]) != key
    assert timing_key(_config("http://127.0.0.1:9/v1", max_concurrency=64), ["a", "b"]) != key
    assert timing_key(config, ["b", "a"]) != key, "other queries (or order) are another measurement"
    two_replicas = config.model_copy(update={"teacher": config.teacher.model_copy(update={
        "server": config.teacher.server.model_copy(update={"data_parallel_size": 2})})})
    assert timing_key(two_replicas, ["a", "b"]) != key, "another serving setup is another measurement"
    assert timing_key(_config("http://127.0.0.1:10/v1"), ["a", "b"]) != key, "another endpoint too"


def test_a_timing_this_version_cannot_read_is_timed_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    store_timing(cache, "k", [SweepPoint(4, 8, 0.5, 16.0, {"p50": 1.0, "p95": 2.0, "p99": 3.0}, 0)])
    db = sqlite3.connect(cache)
    db.execute("""UPDATE teacher_timings SET timing = '{"measured_at": "x", "points": [{"renamed": 1}]}'""")
    db.commit()
    db.close()
    assert load_timing(cache, "k") is None


def test_a_second_compare_reuses_the_teacher_timing_without_asking_again(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "run")
    with FakeEndpoint(answer="billing") as fake:
        config = _config(fake.url)
        first = _measure(config, layout)
        asked = len(fake.requests)
        assert first.status == "measured" and first.points and first.timed_at is None and asked >= len(TEXTS)

        second = _measure(config, layout)
        assert len(fake.requests) == asked, "no request sent to time the same teacher on the same queries"
        assert second.status == "measured" and second.timed_at is not None and second.server_log is None
        assert [p.queries_per_s for p in second.points] == [p.queries_per_s for p in first.points]
        assert second.predictions == first.predictions and second.from_cache == len(TEXTS)
        assert first.sent == asked and second.sent == 0, "requests counts what this run sent, cached ones free"

        retimed = _measure(_config(fake.url, retime_teacher=True), layout)
        assert len(fake.requests) > asked and retimed.timed_at is None


def test_answers_in_generates_cache_are_read_never_written(tmp_path: Path) -> None:
    from distill.artifacts import sha256_file
    from teacher.cache import ResponseCache
    from teacher.client import Answer, Sample

    layout, half = RunLayout(tmp_path / "run"), len(TEXTS) // 2
    with FakeEndpoint(answer="refund") as fake:
        raw = _config(fake.url).model_dump(mode="json")
        raw["cost"] |= {"teacher_input_per_1m": 0.1, "teacher_output_per_1m": 0.4}  # priced per token: no timing
        config = Config.model_validate(raw)
        labelled = compare_stage.TeacherAnswers(config, make_task(config.task), layout, TEXTS)
        cache = ResponseCache(layout.generate.cache)  # generate labelled the first half of the test queries
        cache.put_many((key, Answer(samples=[Sample("billing")])) for key in labelled.keys[:half])
        cache.close()
        before = sha256_file(layout.generate.cache), layout.generate.cache.stat().st_mtime_ns
        first = _measure(config, layout)
        assert len(fake.requests) == len(TEXTS) - half, "only what generate had not paid for is asked"
        second = _measure(config, layout)
        assert len(fake.requests) == len(TEXTS) - half, "and only once"
    assert first.predictions == second.predictions == ["billing"] * half + ["refund"] * (len(TEXTS) - half)
    assert (first.from_cache, second.from_cache) == (half, len(TEXTS))
    assert (sha256_file(layout.generate.cache), layout.generate.cache.stat().st_mtime_ns) == before, "read only"
    assert sorted(p.name for p in layout.generate.folder.iterdir()) == ["cache.sqlite"], "no journal left behind"
    assert layout.compare.teacher_answers.is_file()
