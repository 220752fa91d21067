"""Recorded answers as the teacher (teacher/recorded.py): a CSV of answers, a gateway's JSONL log and a Batch API
output file go through the real generate stage; compare reads the teacher's test answers and prices them from the
recorded usage."""

import json
from pathlib import Path

import pytest

from distill import cost
from distill.artifacts import read_rows
from distill.compare.stage import measure_teacher
from distill.config import load_config
from distill.data.inputs import split_inputs
from distill.errors import UserError
from distill.layout import RunLayout
from distill.tasks import make_task
from fake_openai import FakeEndpoint
from helpers import DEMO_INPUTS, study_config, write_config, write_csv
from teacher.generate import dry_run, generate
from teacher.recorded import NOT_RECORDED

PRICES = {"teacher_price_per_hour": 0, "student_price_per_hour": 1, "train_price_per_hour": 1,
          "teacher_input_per_1m": 0.14, "teacher_cached_input_per_1m": 0.0042, "teacher_output_per_1m": 0.42}


def _config(tmp_path: Path, recorded: Path, rows: int = 8, **teacher: object):
    config = study_config("unused", DEMO_INPUTS, cost=PRICES)
    config["data"]["max_inputs"] = rows
    config["teacher"] = {"recorded": str(recorded), **teacher}
    return load_config(write_config(tmp_path / "c.yaml", config))


def _inputs(tmp_path: Path, rows: int = 8) -> tuple[list, list]:
    """The texts generate labels and the held-out test texts, as the config splits them."""
    splits = split_inputs(_config(tmp_path, DEMO_INPUTS, rows))
    return list(splits.to_label), list(splits.test)


def _rows(tmp_path: Path) -> list[dict]:
    return read_rows(tmp_path / "generate" / "outputs.parquet")


def _chat(answer: str, prompt: int = 400, cached: int = 384) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "deepseek",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": 4, "total_tokens": prompt + 4,
                      "prompt_tokens_details": {"cached_tokens": cached}}}


def _log_line(text: str, answer: str, **usage: int) -> str:
    request = {"model": "deepseek", "messages": [{"role": "system", "content": "Route it."},
                                                 {"role": "user", "content": text}]}
    return json.dumps({"request": request, "response": _chat(answer, **usage)})


def test_a_csv_of_answers_is_the_teacher_and_nothing_is_lost(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    to_label, _ = _inputs(tmp_path)
    answers = ["Billing.", "  REFUND ", "'account access'", "the weather"]  # read as a person would; one no label
    recorded = write_csv(tmp_path / "answers.csv", [
        {"text": e.text, "answer": a, "prompt_tokens": "397", "cached_tokens": "384", "completion_tokens": "4"}
        for e, a in zip(to_label, answers, strict=False)] + [{"text": to_label[4].text, "answer": "",
                                                             "prompt_tokens": "", "cached_tokens": "",
                                                             "completion_tokens": ""}])
    manifest = generate(_config(tmp_path, recorded), RunLayout(tmp_path))  # no model: no server could start
    rows = {r["text"]: r for r in _rows(tmp_path)}
    assert len(rows) == len(to_label), "every input is in the outputs"
    assert [rows[e.text]["label"] for e in to_label[:3]] == ["billing", "refund", "account_access"]
    outside = rows[to_label[3].text]
    assert outside["label"] is None and "not in the label set: 'the weather'" in outside["error"]
    assert rows[to_label[0].text]["cached_tokens"] == 384 and rows[to_label[0].text]["prompt_tokens"] == 397
    unrecorded = [rows[e.text] for e in to_label[4:]]  # an empty answer, and rows the file lacks
    assert all(r["error"] == NOT_RECORDED and r["label"] is None for r in unrecorded)
    counts = manifest["counts"]
    assert counts["not_recorded"] == len(to_label) - 4 and counts["labelled"] == 3
    assert counts["failed"] == 0 and counts["invalid"] == 1, "an answer outside the label set is invalid, not failed"
    assert counts["requests_sent"] == 0 and manifest["usage"]["cached_tokens"] == 4 * 384
    said = capsys.readouterr().err
    assert f"{len(to_label) - 4} of {len(to_label)} inputs have no answer in {recorded}" in said
    assert to_label[5].text[:30] in said


def test_recorded_answers_resume_and_an_edited_file_is_read_again(tmp_path: Path) -> None:
    to_label, _ = _inputs(tmp_path)
    recorded = write_csv(tmp_path / "answers.csv", [{"text": e.text, "answer": "billing"} for e in to_label])
    generate(_config(tmp_path, recorded), RunLayout(tmp_path))
    again = generate(_config(tmp_path, recorded), RunLayout(tmp_path))
    assert again["counts"]["from_cache"] == len(to_label)
    write_csv(recorded, [{"text": e.text, "answer": "refund"} for e in to_label])  # the file's bytes are a key
    generate(_config(tmp_path, recorded), RunLayout(tmp_path))
    assert {r["label"] for r in _rows(tmp_path)} == {"refund"}


def test_a_dry_run_counts_recorded_answers_as_free(tmp_path: Path) -> None:
    to_label, _ = _inputs(tmp_path)
    recorded = write_csv(tmp_path / "answers.csv", [{"text": e.text, "answer": "billing"} for e in to_label[:5]])
    result = dry_run(_config(tmp_path, recorded), RunLayout(tmp_path))
    assert result["requests"] == 0 and result["estimated_cost"] == 0
    assert result["cached"] == 5 and result["not_recorded"] == len(to_label) - 5
    assert not (tmp_path / "generate").exists(), "a dry run writes nothing: no cache, no stage folder"


def test_a_dry_run_beside_a_live_teacher_counts_only_what_is_not_recorded_and_writes_nothing(tmp_path: Path
                                                                                            ) -> None:
    to_label, _ = _inputs(tmp_path)
    recorded = write_csv(tmp_path / "answers.csv", [{"text": e.text, "answer": "refund"} for e in to_label[:5]])
    with FakeEndpoint() as fake:
        config = _config(tmp_path, recorded, model="fake-model", url=fake.url)
        result = dry_run(config, RunLayout(tmp_path))
        assert fake.requests == [], "a dry run asks nothing"
        assert result["requests"] == len(to_label) - 5 and result["cached"] == 5 and result["not_recorded"] == 0
        assert not (tmp_path / "generate").exists()
        generate(config, RunLayout(tmp_path))
        assert len(fake.requests) == result["requests"], "the run asks exactly what the dry run counted"


def test_a_gateway_log_is_the_teacher_with_its_usage(tmp_path: Path) -> None:
    to_label, _ = _inputs(tmp_path)
    log = tmp_path / "gateway.jsonl"
    log.write_text("\n".join(_log_line(e.text, "Technical issue", prompt=500, cached=450) for e in to_label) + "\n")
    manifest = generate(_config(tmp_path, log), RunLayout(tmp_path))
    rows = _rows(tmp_path)
    assert {r["label"] for r in rows} == {"technical_issue"} and len(rows) == len(to_label)
    assert all(r["prompt_tokens"] == 500 and r["cached_tokens"] == 450 for r in rows)
    assert manifest["counts"]["not_recorded"] == 0


def test_a_log_line_that_is_not_json_names_the_file_and_line(tmp_path: Path) -> None:
    to_label, _ = _inputs(tmp_path)
    log = tmp_path / "gateway.jsonl"
    log.write_text(_log_line(to_label[0].text, "billing") + "\n{not json\n")
    with pytest.raises(UserError, match=r"gateway\.jsonl: line 2, column 2: not valid JSON"):
        generate(_config(tmp_path, log), RunLayout(tmp_path))
    assert not (tmp_path / "generate" / "outputs.parquet").exists()


def test_a_batch_output_is_matched_to_its_requests_by_custom_id(tmp_path: Path) -> None:
    to_label, _ = _inputs(tmp_path)
    requests, outputs = tmp_path / "batch_in.jsonl", tmp_path / "batch_out.jsonl"
    requests.write_text("\n".join(json.dumps(
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "m", "messages": [{"role": "user", "content": e.text}]}}) for i, e in enumerate(to_label)))
    outputs.write_text("\n".join(json.dumps(  # in another order than the requests, as batches return
        {"id": f"b{i}", "custom_id": f"r{i}", "response": {"status_code": 200, "body": _chat(f"shipping {i}"[:8])},
         "error": None}) for i in reversed(range(len(to_label)))))
    with pytest.raises(UserError, match="teacher.recorded_requests"):
        generate(_config(tmp_path, outputs), RunLayout(tmp_path))
    generate(_config(tmp_path, outputs, recorded_requests=str(requests)), RunLayout(tmp_path))
    assert {r["label"] for r in _rows(tmp_path)} == {"shipping"}


def test_a_live_teacher_answers_only_what_is_not_recorded(tmp_path: Path) -> None:
    to_label, _ = _inputs(tmp_path)
    recorded = write_csv(tmp_path / "answers.csv", [{"text": e.text, "answer": "refund"} for e in to_label[:5]])
    with FakeEndpoint() as fake:  # answers "billing"
        manifest = generate(_config(tmp_path, recorded, model="fake-model", url=fake.url, concurrency=1),
                            RunLayout(tmp_path))
        assert sorted(r["messages"][-1]["content"] for r in fake.requests) == sorted(e.text for e in to_label[5:])
    labels = {r["text"]: r["label"] for r in _rows(tmp_path)}
    assert [labels[e.text] for e in to_label] == ["refund"] * 5 + ["billing"] * (len(to_label) - 5)
    assert manifest["counts"]["not_recorded"] == 0


def test_a_recorded_log_that_grows_beside_a_live_teacher_never_pays_for_a_live_answer_again(tmp_path: Path) -> None:
    """distill serve's teacher log grows every day; the answers the live teacher gave before stay in the cache."""
    to_label, _ = _inputs(tmp_path)
    recorded = write_csv(tmp_path / "answers.csv", [{"text": e.text, "answer": "refund"} for e in to_label[:5]])
    with FakeEndpoint() as fake:
        config = _config(tmp_path, recorded, model="fake-model", url=fake.url, concurrency=1)
        generate(config, RunLayout(tmp_path))
        asked = len(fake.requests)
        write_csv(recorded, [{"text": e.text, "answer": "refund"} for e in to_label[:6]])  # one more line logged
        again = generate(_config(tmp_path, recorded, model="fake-model", url=fake.url, concurrency=1),
                         RunLayout(tmp_path))
        assert len(fake.requests) == asked, "no live answer is asked for again"
    assert again["counts"]["from_cache"] == len(to_label)


def test_label_level_distillation_without_logprobs_is_refused(tmp_path: Path) -> None:
    to_label, _ = _inputs(tmp_path)
    recorded = write_csv(tmp_path / "answers.csv", [{"text": e.text, "answer": "billing"} for e in to_label])
    config = _config(tmp_path, recorded)
    config = config.model_copy(update={"student": config.student.model_copy(update={"distill_weight": 0.5})})
    with pytest.raises(UserError, match="no log-probabilities.*student.distill_weight: 0"):
        generate(config, RunLayout(tmp_path))


def test_a_teacher_needs_a_model_or_recorded_answers(tmp_path: Path) -> None:
    config = study_config("unused", DEMO_INPUTS)
    config["teacher"] = {"url": "http://localhost:1/v1"}
    with pytest.raises(UserError, match="teacher.recorded"):
        load_config(write_config(tmp_path / "c.yaml", config))


def test_compare_reads_the_teachers_test_answers_and_prices_them_as_billed(tmp_path: Path) -> None:
    to_label, test = _inputs(tmp_path)
    log = tmp_path / "gateway.jsonl"
    log.write_text("\n".join(_log_line(e.text, "billing", prompt=400, cached=300) for e in [*to_label, *test[1:]]))
    config = _config(tmp_path, log)
    texts, ids = [e.text for e in test], [e.id for e in test]
    with pytest.raises(UserError, match=f"1 of {len(test)} test queries have no answer"):
        measure_teacher(config, RunLayout(tmp_path), None, make_task(config.task), texts, [], ids)
    with log.open("a") as out:
        out.write("\n" + _log_line(test[0].text, "refund", prompt=400, cached=300))
    config = _config(tmp_path, log)
    measured = measure_teacher(config, RunLayout(tmp_path), None, make_task(config.task), texts, [], ids)
    assert measured.predictions == ["refund"] + ["billing"] * (len(test) - 1)
    assert measured.served_as == "recorded answers"
    per_1k = cost.teacher_cost_per_1k(config.cost, None, 400, 4, None, 300)
    assert per_1k == pytest.approx(1000 * (100 * 0.14 + 300 * 0.0042 + 4 * 0.42) / 1e6)


@pytest.mark.slow
def test_distill_run_with_recorded_answers_alone_starts_no_teacher(tmp_path: Path, tiny_model: Path) -> None:
    """The whole pipeline on a real student: the teacher is a CSV of answers (the demo's gold, as a strong
    teacher's), compare reads its test answers from the file and prices them as billed."""
    import csv
    import subprocess
    import sys

    with open(DEMO_INPUTS, newline="", encoding="utf-8") as handle:
        gold = list(csv.DictReader(handle))
    recorded = write_csv(tmp_path / "answers.csv", [
        {"text": r["text"], "answer": r["category"].replace("_", " ").title(), "prompt_tokens": 400,
         "cached_tokens": 384, "completion_tokens": 4} for r in gold])
    settings = study_config(tiny_model, DEMO_INPUTS, cost=PRICES)
    settings["teacher"] = {"recorded": str(recorded)}
    settings["compare"]["prompt_baseline"] = False
    config = write_config(tmp_path / "study.yaml", settings)
    result = subprocess.run([sys.executable, "-m", "distill.cli", "run", "-c", str(config), "--run-dir",
                             str(tmp_path / "run")], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "compare" / "metrics.json").read_text())
    teacher = metrics["teacher"]
    assert teacher["served_as"] == "recorded answers" and teacher["quality"] == 1.0, "its answers are the gold"
    assert teacher["requests"] == 0 and teacher["cached_tokens_per_query"] == 384
    assert teacher["cost_per_1k_queries"] == pytest.approx((16 * 0.14 + 384 * 0.0042 + 4 * 0.42) / 1e3)
    run = tmp_path / "run"
    assert not (run / "generate" / "server.log").exists() and not (run / "compare" / "teacher_server.log").exists()
    assert "96% of the teacher's prompt tokens" in (run / "compare" / "report.md").read_text()


def test_recorded_answers_alone_need_the_token_prices_they_were_billed_at(tmp_path: Path) -> None:
    """No server of ours answers, so an hourly price has nothing to price: the verdict would read 'not cheaper'."""
    config = study_config("unused", DEMO_INPUTS)
    config["teacher"] = {"recorded": str(write_csv(tmp_path / "answers.csv", [{"text": "hi", "answer": "billing"}]))}
    with pytest.raises(UserError, match="cost.teacher_input_per_1m, cost.teacher_output_per_1m: recorded answers"):
        load_config(write_config(tmp_path / "c.yaml", config))
