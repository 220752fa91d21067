"""The generate stage against scripted endpoints: retries, recorded failures, budgets, secrets, votes."""

import json
from pathlib import Path

import pytest

from distill.artifacts import read_rows
from distill.config import load_config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.tasks import Parsed
from fake_openai import FakeEndpoint
from helpers import DEMO_INPUTS, study_config, write_config
from teacher.generate import dry_run, generate
from teacher.rows import vote
from teacher.stream import NOT_SENT


def _config(tmp_path: Path, url: str, rows: int = 6, **teacher: object):
    config = study_config("fake-model", DEMO_INPUTS)
    config["data"]["max_inputs"] = rows
    config["teacher"] = {"model": "fake-model", "url": url, "concurrency": 1, "max_retries": 1, **teacher}
    return load_config(write_config(tmp_path / "c.yaml", config))


def _last_text(tmp_path: Path) -> str:
    """The last input the config labels (the first is sent alone, as a probe that stops the run if it fails)."""
    from distill.data.inputs import split_inputs

    return split_inputs(_config(tmp_path, "http://unused/v1")).to_label[-1].text


def _rows(run_dir: Path) -> list[dict]:
    return read_rows(run_dir / "generate" / "outputs.parquet")


def test_429_and_500_are_retried_until_they_succeed(tmp_path: Path) -> None:
    with FakeEndpoint(failures=2, status=429) as fake:
        manifest = generate(_config(tmp_path, fake.url, rows=1, max_retries=3), RunLayout(tmp_path))
        assert len(fake.requests) == 3
    assert _rows(tmp_path)[0]["label"] == "billing"
    assert manifest["counts"]["failed"] == 0


def test_persistent_errors_are_recorded_then_retried_by_the_next_run(tmp_path: Path) -> None:
    broken = _last_text(tmp_path)
    with FakeEndpoint(fail_text=broken, status=500) as fake:  # this row fails every time
        manifest = generate(_config(tmp_path, fake.url), RunLayout(tmp_path))
    rows = _rows(tmp_path)
    failing = [r for r in rows if r["text"] == broken]
    assert len(rows) == 6 and 0 < len(failing) < 6
    assert all(r["label"] is None and "InternalServerError" in r["error"] for r in failing)
    assert manifest["counts"]["failed"] == len(failing)
    with FakeEndpoint() as fake:
        rerun = generate(_config(tmp_path, fake.url), RunLayout(tmp_path))
    assert rerun["counts"]["requests_sent"] == len(failing) and all(r["label"] == "billing" for r in _rows(tmp_path))


def test_a_server_dying_mid_run_loses_no_row(tmp_path: Path) -> None:
    with FakeEndpoint(stop_after=4) as fake:
        generate(_config(tmp_path, fake.url, rows=10), RunLayout(tmp_path))
    rows = _rows(tmp_path)
    assert len(rows) == 10 and len({r["id"] for r in rows}) == 10
    assert sum(r["label"] == "billing" for r in rows) == 4
    assert all(r["error"] for r in rows if r["label"] is None)
    with FakeEndpoint() as fake:
        rerun = generate(_config(tmp_path, fake.url, rows=10), RunLayout(tmp_path))
    assert rerun["counts"]["requests_sent"] == 6 and rerun["counts"]["from_cache"] == 4
    assert [r["id"] for r in _rows(tmp_path)] == [r["id"] for r in rows]


def test_max_cost_stops_cleanly_and_a_later_run_continues(tmp_path: Path) -> None:
    # 11 prompt + 2 completion tokens a request at $1000/$500 per 1M: $0.012 a request.
    prices = {"teacher_price_per_hour": 0, "student_price_per_hour": 1, "train_price_per_hour": 1,
              "teacher_input_per_1m": 1000, "teacher_output_per_1m": 500}
    config = study_config("fake-model", DEMO_INPUTS, cost=prices)
    with FakeEndpoint() as fake:
        config["teacher"] = {"model": "fake-model", "url": fake.url, "concurrency": 1, "max_cost": 0.03}
        manifest = generate(load_config(write_config(tmp_path / "c.yaml", config)), RunLayout(tmp_path))
        assert len(fake.requests) == 3
    assert manifest["stopped_by_max_cost"] and manifest["counts"]["not_sent"] == 37
    assert manifest.get("partial") is None, "the budget is per run: a rerun of the same config would spend it again"
    assert manifest["spent_this_run"] == pytest.approx(0.036)
    assert sum(r["error"] == NOT_SENT for r in _rows(tmp_path)) == 37
    with FakeEndpoint() as fake:
        del config["teacher"]["max_cost"]
        config["teacher"]["url"] = fake.url
        rerun = generate(load_config(write_config(tmp_path / "c.yaml", config)), RunLayout(tmp_path))
    assert rerun["counts"]["requests_sent"] == 37 and rerun["counts"]["labelled"] == 40


def test_api_key_is_sent_but_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("DISTILL_TEST_KEY", secret)
    with FakeEndpoint(failures=1, status=401) as fake, pytest.raises(UserError, match="refused the API key"):
        generate(_config(tmp_path, fake.url, rows=2, api_key_env="DISTILL_TEST_KEY"), RunLayout(tmp_path))
    assert fake.auth_headers[0] == f"Bearer {secret}"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_missing_api_key_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISTILL_ABSENT_KEY", raising=False)
    with FakeEndpoint() as fake, pytest.raises(UserError, match="DISTILL_ABSENT_KEY"):
        generate(_config(tmp_path, fake.url, api_key_env="DISTILL_ABSENT_KEY"), RunLayout(tmp_path))


def test_samples_are_voted(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        generate(_config(tmp_path, fake.url, rows=2, samples=3, temperature=0.8), RunLayout(tmp_path))
        assert fake.requests[0]["n"] == 3
    row = _rows(tmp_path)[0]
    assert row["vote_share"] == 1.0 and json.loads(row["samples"]) == ["billing"] * 3


def test_vote_takes_the_majority_and_its_share() -> None:
    parsed = [Parsed("a", None), Parsed(None, "bad"), Parsed("b", None), Parsed("a", None)]
    assert vote(parsed) == (Parsed("a", None), 0.5)
    assert vote([Parsed(None, "bad")] * 2) == (Parsed(None, "bad"), 0.0)
    assert vote([Parsed("a", None)]) == (Parsed("a", None), None)


def test_dry_run_counts_with_the_teacher_tokenizer_and_sends_nothing(tmp_path: Path, tiny_model: Path) -> None:
    config = study_config(tiny_model, DEMO_INPUTS,
                          cost={"teacher_price_per_hour": 0, "student_price_per_hour": 1, "train_price_per_hour": 1,
                                "teacher_input_per_1m": 1.0, "teacher_output_per_1m": 2.0})
    with FakeEndpoint(model=str(tiny_model)) as fake:
        config["teacher"] = {"model": str(tiny_model), "url": fake.url}
        loaded = load_config(write_config(tmp_path / "c.yaml", config))
        before = dry_run(loaded, RunLayout(tmp_path))
        assert fake.requests == []
        generate(loaded, RunLayout(tmp_path))
        after = dry_run(loaded, RunLayout(tmp_path))
    assert before["requests"] == 40 and before["counted_with"] == "teacher tokenizer"
    assert before["prompt_tokens"] > 40 * 50 and before["completion_tokens"] >= 40
    assert before["estimated_cost"] == pytest.approx(
        (before["prompt_tokens"] * 1.0 + before["completion_tokens"] * 2.0) / 1e6)
    assert after["requests"] == 0 and after["cached"] == 40


def test_oversize_prompt_names_file_and_row(tmp_path: Path, tiny_model: Path) -> None:
    config = study_config(tiny_model, DEMO_INPUTS)
    config["teacher"]["server"]["max_model_len"] = 64
    message = r"support_inbox.csv: row \d+: prompt of \d+ tokens .* exceeds max_model_len 64"
    with pytest.raises(UserError, match=message):
        generate(load_config(write_config(tmp_path / "c.yaml", config)), RunLayout(tmp_path))


def test_lora_rank_is_rounded_up_to_one_vllm_accepts() -> None:
    from teacher.server import served_lora_rank

    assert [served_lora_rank(r) for r in (1, 4, 8, 12, 64, 300)] == [1, 8, 8, 16, 64, 320]
    with pytest.raises(UserError, match="up to 512"):
        served_lora_rank(1024)


def test_rows_appended_to_the_input_are_labelled_without_relabelling_old_ones(tmp_path: Path) -> None:
    from distill.data.inputs import split_inputs
    from helpers import write_csv

    rows = [{"text": f"customer message number {i}", "category": "billing"} for i in range(30)]
    config = study_config("fake-model", write_csv(tmp_path / "in.csv", rows[:20]))
    config["data"] = {"inputs": str(tmp_path / "in.csv"), "test_size": 5}
    with FakeEndpoint() as fake:
        config["teacher"] = {"model": "fake-model", "url": fake.url}
        first = load_config(write_config(tmp_path / "c.yaml", config))
        generate(first, RunLayout(tmp_path))
        old_test = {e.text for e in split_inputs(first).test}
        old_labelled = {e.text for e in split_inputs(first).to_label}
        write_csv(tmp_path / "in.csv", rows)
        grown = load_config(write_config(tmp_path / "c.yaml", config))
        manifest = generate(grown, RunLayout(tmp_path))
    new_split = split_inputs(grown)
    assert not old_labelled & {e.text for e in new_split.test}, "no labelled row may move into the test split"
    assert manifest["counts"]["rows"] == 25 and manifest["counts"]["requests_sent"] == 25 - len(
        old_labelled & {e.text for e in new_split.to_label})
    assert len(old_test & {e.text for e in new_split.test}) >= 3


def test_an_answer_cut_off_at_max_tokens_is_invalid_and_filtered_as_truncated(tmp_path: Path) -> None:
    from distill.config import FilterConfig
    from distill.filter.screen import row_reason

    with FakeEndpoint(finish_reason="length") as fake:
        manifest = generate(_config(tmp_path, fake.url, rows=3), RunLayout(tmp_path))
    rows = _rows(tmp_path)
    assert all(r["finish_reason"] == "length" and r["label"] is None and r["error"].startswith("truncated")
               for r in rows), "a label that parses is still not trusted when the answer was cut off"
    assert manifest["counts"]["truncated"] == 3 and manifest["counts"]["failed"] == 0
    assert {row_reason(r, FilterConfig()) for r in rows} == {"truncated"}


def test_serving_seconds_are_recorded_per_answer_and_kept_in_the_cache(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        first = generate(_config(tmp_path, fake.url, rows=8), RunLayout(tmp_path))
        paid = {r["id"]: r["serving_s"] for r in _rows(tmp_path)}
        again = generate(_config(tmp_path, fake.url, rows=8), RunLayout(tmp_path))
    assert all(s > 0 for s in paid.values())
    assert sum(paid.values()) == pytest.approx(first["serving_s"], abs=1e-3)
    assert sum(paid.values()) <= first["timings"]["teacher"]
    assert again["counts"]["requests_sent"] == 0
    assert {r["id"]: r["serving_s"] for r in _rows(tmp_path)} == paid, "a cached answer keeps what it cost"


def test_answers_of_another_served_model_are_not_reused(tmp_path: Path) -> None:
    with FakeEndpoint(root="/models/teacher-v1") as fake:
        generate(_config(tmp_path, fake.url), RunLayout(tmp_path))
    with FakeEndpoint(root="/models/teacher-v2") as fake:  # same name, other weights behind the URL
        other = generate(_config(tmp_path, fake.url), RunLayout(tmp_path))
    assert other["counts"]["from_cache"] == 0 and other["counts"]["requests_sent"] == 6
    assert other["teacher"]["fingerprint"]["reported"] == [{"id": "fake-model", "root": "/models/teacher-v2"}]
    with FakeEndpoint(root="/models/teacher-v1") as fake:
        back = generate(_config(tmp_path, fake.url), RunLayout(tmp_path))
    assert back["counts"]["from_cache"] == 6 and back["counts"]["requests_sent"] == 0


def test_a_local_teacher_is_fingerprinted_by_content_dtype_and_quantization(tmp_path: Path) -> None:
    from distill.config import TeacherConfig
    from teacher.fingerprint import local_fingerprint

    model = tmp_path / "teacher"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"\0" * 3_000_000)
    base = local_fingerprint(TeacherConfig(model=str(model)))
    moved = tmp_path / "moved"
    model.rename(moved)
    assert local_fingerprint(TeacherConfig(model=str(moved))) == base, "a moved folder is the same teacher"
    weights = bytearray((moved / "model.safetensors").read_bytes())
    weights[1_500_000] = 1  # new weights at the same path, same size
    (moved / "model.safetensors").write_bytes(bytes(weights))
    assert local_fingerprint(TeacherConfig(model=str(moved))) != base
    assert local_fingerprint(TeacherConfig(model=str(moved), server={"dtype": "float16"}))["dtype"] == "float16"
    quantized = local_fingerprint(TeacherConfig(model=str(moved), server={"extra_args": ["--quantization", "fp8"]}))
    assert quantized["quantization"] == "fp8"


def test_rows_stream_through_in_chunks_written_as_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    import pyarrow.parquet as pq

    import teacher.stream

    (tmp_path / "whole").mkdir()
    (tmp_path / "chunked").mkdir()
    with FakeEndpoint() as fake:
        generate(_config(tmp_path / "whole", fake.url, rows=40, concurrency=3), RunLayout(tmp_path / "whole"))
        monkeypatch.setattr(teacher.stream, "CHUNK_ROWS", 7)
        manifest = generate(_config(tmp_path / "chunked", fake.url, rows=40, concurrency=3),
                            RunLayout(tmp_path / "chunked"))
    outputs = tmp_path / "chunked" / "generate" / "outputs.parquet"
    assert pq.ParquetFile(outputs).num_row_groups == 6  # ceil(40 / 7)
    assert [r["id"] for r in read_rows(outputs)] == [r["id"] for r in _rows(tmp_path / "whole")]
    assert manifest["counts"]["labelled"] == 40


def test_the_context_check_tokenises_only_rows_still_to_send(tmp_path: Path) -> None:
    from teacher.survey import make_plan, survey

    class CountingTokenizer:
        prompts = 0

        def apply_chat_template(self, messages: list, tokenize: bool, add_generation_prompt: bool) -> str:
            CountingTokenizer.prompts += 1
            return str(messages)

        def __call__(self, texts: list[str], add_special_tokens: bool) -> dict:
            return {"input_ids": [[0] * 20 for _ in texts]}

    with FakeEndpoint() as fake:
        config = _config(tmp_path, fake.url, rows=10)
        generate(config, RunLayout(tmp_path))
        plan = make_plan(config)
    assert survey(config, plan, RunLayout(tmp_path).generate.cache, CountingTokenizer()).to_send == 0
    assert CountingTokenizer.prompts == 0, "a cached row's prompt is never tokenised again"


def test_answers_are_committed_in_groups_by_their_own_thread(tmp_path: Path) -> None:
    import time

    from teacher.cache import GROUP_ANSWERS, CacheWriter, ResponseCache
    from teacher.client import Answer, Sample

    writer = CacheWriter(tmp_path / "cache.sqlite")
    writer.start_clock()
    for i in range(2 * GROUP_ANSWERS + 10):
        writer.add(f"key{i}", Answer(samples=[Sample("billing")]))
    deadline = time.monotonic() + 5
    while writer.committed < 2 * GROUP_ANSWERS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.committed == 2 * GROUP_ANSWERS, "full groups are committed without waiting for the caller"
    writer.close()  # commits the last, partial group
    reader = ResponseCache(tmp_path / "cache.sqlite")
    stored = reader.get_many([f"key{i}" for i in range(2 * GROUP_ANSWERS + 10)])
    reader.close()
    assert len(stored) == 2 * GROUP_ANSWERS + 10 and all(a.serving_s > 0 for a in stored.values())


def test_a_row_whose_request_raises_is_recorded_and_the_run_finishes(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer the client cannot even parse must not leave its worker dead and the stage waiting forever."""
    from teacher.client import Endpoint

    send = Endpoint.send_payload

    text = _last_text(tmp_path)
    broken = json.dumps(text)[1:-1].encode()  # as the request's JSON spells it

    async def odd_reply(self, path: str, payload: bytes):
        if broken in payload:
            raise KeyError("logprobs")  # what a 200 without the expected fields raised inside the client
        return await send(self, path, payload)

    monkeypatch.setattr(Endpoint, "send_payload", odd_reply)
    with FakeEndpoint() as fake:
        manifest = generate(_config(tmp_path, fake.url, concurrency=2), RunLayout(tmp_path))
    failing = [r for r in _rows(tmp_path) if r["text"] == text]
    assert len(failing) == 1 and all(r["label"] is None and "KeyError" in r["error"] for r in failing)
    assert manifest["counts"]["rows"] == 6


def test_request_bytes_are_the_full_build_or_it_is_used() -> None:
    """Bodies joined from the encoded request's two halves equal building and encoding the whole request; a task
    that does not put the text in its request once, as it is, gets the full build."""
    import msgspec

    from teacher.stream import Payloads

    encode = msgspec.json.encode
    payloads = Payloads(lambda text: {"messages": [{"role": "user", "content": f"Q: {text}"}], "n": 1}, encode)
    assert payloads.parts is not None
    for text in ['say "hi"\n\tnow', "caf\u00e9 \u2028 \\ \x00", ""]:
        assert payloads(text) == encode({"messages": [{"role": "user", "content": f"Q: {text}"}], "n": 1})
    twice = Payloads(lambda text: {"a": text, "b": text}, encode)
    assert twice.parts is None and twice("x") == encode({"a": "x", "b": "x"})
    stripped = Payloads(lambda text: {"a": text.strip()}, encode)
    assert stripped.parts is not None
    stripped.check(" padded ")  # each chunk's first row to send is compared with the full build
    assert stripped.parts is None and stripped(" padded ") == encode({"a": "padded"})


def test_a_full_commit_queue_whose_thread_stopped_raises_instead_of_hanging(tmp_path: Path) -> None:
    from teacher.cache import GROUP_ANSWERS, GROUPS_BEHIND, CacheWriter
    from teacher.client import Answer

    writer = CacheWriter(tmp_path / "cache.sqlite")
    writer.error = OSError("disk full")
    writer.groups.put(None)  # the commit thread stops, as it does after a failed commit
    writer.thread.join()
    with pytest.raises(UserError, match="stopped committing"):
        for i in range((GROUPS_BEHIND + 2) * GROUP_ANSWERS):
            writer.add(str(i), Answer())


def test_output_row_values_land_in_the_columns_they_name() -> None:
    from distill.data.inputs import Example
    from teacher.client import Answer, Sample
    from teacher.rows import TEACHER_COLUMNS, output_row

    sample = Sample('{"label": "b"}', logprob=-0.25, top_logprobs=[{"token": "b", "logprob": -0.25}],
                    finish_reason="stop")
    answer = Answer(samples=[sample], prompt_tokens=41, completion_tokens=5, latency_ms=12.5, serving_s=0.75)
    row = dict(zip(TEACHER_COLUMNS, output_row(Example("i1", "the text", "gold-b"), answer,
                                               lambda text, _: Parsed("b", None, "because")), strict=True))
    assert row == {"id": "i1", "text": "the text", "gold": "gold-b", "raw": '{"label": "b"}', "label": "b",
                   "error": None, "rationale": "because", "vote_share": None, "samples": '["b"]', "logprob": -0.25,
                   "top_logprobs": '[{"token": "b", "logprob": -0.25}]', "prompt_tokens": 41,
                   "completion_tokens": 5, "cached_tokens": 0, "latency_ms": 12.5, "finish_reason": "stop",
                   "serving_s": 0.75}
