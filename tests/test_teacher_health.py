"""A broken teacher, a failed write or a refused row: the generate stage stops clearly, is never recorded complete,
and the next run asks again for exactly what is missing or was answered by a broken server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.artifacts import read_rows
from distill.cli import app
from distill.config import load_config
from distill.errors import UserError
from distill.layout import RunLayout
from fake_openai import FakeEndpoint
from helpers import DEMO_INPUTS, REPO, study_config, write_config, write_csv
from teacher.generate import generate

runner = CliRunner()


def _config(tmp_path: Path, url: str, rows: int = 40, inputs: Path = DEMO_INPUTS, **teacher: object):
    config = study_config("fake-model", inputs)
    config["data"]["max_inputs"] = rows
    config["teacher"] = {"model": "fake-model", "url": url, "concurrency": 1, "max_retries": 0, **teacher}
    return load_config(write_config(tmp_path / "c.yaml", config))


def _rows(run_dir: Path) -> list[dict]:
    return read_rows(run_dir / "generate" / "outputs.parquet")


def _labelled_in_cache(run_dir: Path) -> int:
    with sqlite3.connect(run_dir / "generate" / "cache.sqlite") as db:
        answers = [json.loads(raw) for (raw,) in db.execute("SELECT answer FROM answers")]
    return sum(a["samples"][0]["text"] == "billing" for a in answers)


def test_a_demo_run_against_an_empty_answering_teacher_stops_at_generate_and_a_rerun_relabels_it(
        tmp_path: Path) -> None:
    demo = str(REPO / "configs" / "demo.yaml")
    run_dir = tmp_path / "run"
    with FakeEndpoint(answer="") as empty:
        url = ["--set", f"teacher.url={empty.url}", "--set", "teacher.served_model_name=fake-model",
               "--set", "cost.teacher_gpus=1"]
        result = runner.invoke(app, ["run", "-c", demo, "--run-dir", str(run_dir), *url])
        asked = len(empty.requests)
    assert result.exit_code == 1, result.output
    message = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and "the server looks broken" in message[0] and "empty or invalid" in message[0]
    assert "server's log" in message[0] and "rerun" in message[0]
    assert asked < 128  # stopped after a window of empty answers, not after paying for every row
    assert not (run_dir / "generate" / "manifest.json").exists()
    status = runner.invoke(app, ["status", str(run_dir), "--json"])
    assert json.loads(status.stdout)["stages"]["generate"] == "unfinished"
    with FakeEndpoint() as healthy:
        url = ["--set", f"teacher.url={healthy.url}", "--set", "teacher.served_model_name=fake-model",
               "--set", "cost.teacher_gpus=1"]
        rerun = runner.invoke(app, ["generate", "-c", demo, "--run-dir", str(run_dir), *url])
        assert rerun.exit_code == 0, rerun.output
        assert len(healthy.requests) == 128  # the empty answers cached by the broken run are asked again
    rows = _rows(run_dir)
    assert len(rows) == 128 and all(r["label"] == "billing" for r in rows)
    manifest = json.loads((run_dir / "generate" / "manifest.json").read_text())
    assert manifest["partial"] is None and manifest["counts"]["retried_invalid"] == asked
    assert not (run_dir / "generate" / "retry-invalid.json").exists()


def test_a_finished_run_with_mostly_invalid_answers_is_partial_and_the_next_asks_again(tmp_path: Path) -> None:
    from distill.pipeline import decide, get_stage

    with FakeEndpoint(answer="no idea") as fake:  # too few answers for the window: the run finishes
        config = _config(tmp_path, fake.url, rows=6)
        manifest = generate(config, RunLayout(tmp_path))
    assert manifest["partial"].startswith("100% of the answers were invalid")
    assert decide(get_stage("generate"), config, RunLayout(tmp_path), forced=False)[0] == "run"
    with FakeEndpoint() as fake:
        rerun = generate(_config(tmp_path, fake.url, rows=6), RunLayout(tmp_path))
        assert len(fake.requests) == 6
    assert rerun["partial"] is None and all(r["label"] == "billing" for r in _rows(tmp_path))


def test_the_filter_keeping_nothing_names_the_dominant_drop_and_the_command_that_fixes_it(tmp_path: Path) -> None:
    from distill.filter.stage import filter_stage

    with FakeEndpoint(answer="no idea") as fake:
        config = _config(tmp_path, fake.url, rows=6)
        generate(config, RunLayout(tmp_path))
    with pytest.raises(UserError, match=r"most were dropped as invalid \(6 of 6.*--retry-invalid"):
        filter_stage(config, RunLayout(tmp_path))


def test_retry_invalid_from_the_cli_asks_again_only_for_invalid_answers(tmp_path: Path) -> None:
    with FakeEndpoint(answer="no idea", fail_after=3) as fake:  # 3 invalid answers, then refusals
        generate(_config(tmp_path, fake.url, rows=6, max_invalid_rate=1.0), RunLayout(tmp_path))
    with FakeEndpoint() as fake:
        config = _config(tmp_path, fake.url, rows=6, max_invalid_rate=1.0)
        result = runner.invoke(app, ["generate", "-c", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path),
                                     "--retry-invalid"])
        assert result.exit_code == 0, result.output
        assert len(fake.requests) == 6  # 3 invalid asked again, 3 failed sent again
    assert all(r["label"] == "billing" for r in _rows(tmp_path)) and config.teacher.max_invalid_rate == 1.0


def test_prompt_token_counts_far_from_the_tokenizer_stop_the_stage(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import teacher.generate

    class SixHundredTokens:  # the teacher's tokenizer says 600 prompt tokens; the fake server reports 11
        def apply_chat_template(self, messages: list, **_: object) -> str:
            return str(messages)

        def __call__(self, texts: list[str], **_: object) -> dict:
            return {"input_ids": [[0] * 600 for _ in texts]}

    monkeypatch.setattr(teacher.generate, "_local_tokenizer", lambda config: SixHundredTokens())
    with FakeEndpoint() as fake, pytest.raises(UserError, match="reported 11 prompt tokens for a prompt of 600"
                                                                 ".*answers it gave in this run were removed"):
        generate(_config(tmp_path, fake.url), RunLayout(tmp_path))
    assert len(fake.requests) < 40 and not (tmp_path / "generate" / "manifest.json").exists()
    # A server that does not read its prompts still answers valid labels: none of them may become training data.
    assert _labelled_in_cache(tmp_path) == 0


def test_a_row_the_teacher_refuses_makes_the_run_partial_and_is_never_the_probe(tmp_path: Path) -> None:
    from distill.data.inputs import split_inputs
    from distill.pipeline import decide, get_stage

    refused = split_inputs(_config(tmp_path, "http://unused/v1", rows=10)).to_label[3].text
    with FakeEndpoint(fail_text=refused, status=400) as fake:
        config = _config(tmp_path, fake.url, rows=10)
        first = generate(config, RunLayout(tmp_path))
        assert first["partial"] == "1 rows failed" and first["counts"]["failed"] == 1
        action, reason = decide(get_stage("generate"), config, RunLayout(tmp_path), forced=False)
        assert action == "run" and "1 rows failed" in reason and "asks for those rows again" in reason
        again = generate(config, RunLayout(tmp_path))  # the refused row alone is left: it is sent, not probed
    assert again["counts"]["requests_sent"] == 1 and again["partial"] == "1 rows failed"
    with FakeEndpoint() as fake:
        healed = generate(_config(tmp_path, fake.url, rows=10), RunLayout(tmp_path))
        assert len(fake.requests) == 1 and refused in fake.requests[0]["messages"][-1]["content"]
    assert healed["counts"]["requests_sent"] == 1 and healed["partial"] is None


def test_copies_of_one_text_in_the_open_window_are_sent_once(tmp_path: Path) -> None:
    rows = [{"text": "where is my parcel?" if i % 4 else f"message {i}", "category": "shipping"} for i in range(40)]
    inputs = write_csv(tmp_path / "in.csv", rows)
    with FakeEndpoint(capacity=1, service_s=0.01) as fake:
        config = _config(tmp_path, fake.url, inputs=inputs, concurrency=8)
        manifest = generate(config, RunLayout(tmp_path))
        texts = [r["messages"][-1]["content"] for r in fake.requests]
    labelled = _rows(tmp_path)
    distinct = {r["text"] for r in labelled}
    assert len(texts) == len(distinct) and manifest["counts"]["copies"] == len(labelled) - len(distinct)
    assert all(r["label"] == "billing" for r in labelled)


def _in_thread(action) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)  # daemon: a hang fails the test rather than blocking it
    thread.start()
    return thread, errors


def test_a_failed_cache_commit_stops_the_stage_at_once_and_a_rerun_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from teacher.cache import ResponseCache

    real_put = ResponseCache.put_many
    commits = []

    def put_then_fail(self: ResponseCache, items) -> None:
        if commits:
            raise OSError(28, "No space left on device")
        commits.append(1)
        real_put(self, items)

    monkeypatch.setattr(ResponseCache, "put_many", put_then_fail)
    with FakeEndpoint(capacity=1, service_s=0.05) as fake:
        started = time.monotonic()
        thread, errors = _in_thread(lambda: generate(_config(tmp_path, fake.url), RunLayout(tmp_path)))
        thread.join(timeout=30)
        assert not thread.is_alive(), "generate hung after a failed commit"
        assert time.monotonic() - started < 1.5 and len(fake.requests) < 40
    assert len(errors) == 1 and isinstance(errors[0], UserError), errors
    assert "stopped committing (OSError: [Errno 28] No space left on device)" in str(errors[0])
    assert not (tmp_path / "generate" / "manifest.json").exists()
    monkeypatch.setattr(ResponseCache, "put_many", real_put)
    kept = _labelled_in_cache(tmp_path)
    assert kept >= 1
    with FakeEndpoint() as fake:
        rerun = generate(_config(tmp_path, fake.url), RunLayout(tmp_path))
    assert rerun["counts"]["requests_sent"] == 40 - kept and rerun["counts"]["from_cache"] == kept
    assert all(r["label"] == "billing" for r in _rows(tmp_path))


def test_an_exception_in_a_worker_stops_the_stage_instead_of_hanging(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from teacher.stream import Breaker

    real_record = Breaker.record

    def record_then_fail(self: Breaker, answer) -> None:
        if len(self.recent) >= 4:
            raise RuntimeError("injected worker failure")
        real_record(self, answer)

    monkeypatch.setattr(Breaker, "record", record_then_fail)
    with FakeEndpoint() as fake:
        thread, errors = _in_thread(lambda: generate(_config(tmp_path, fake.url), RunLayout(tmp_path)))
        thread.join(timeout=30)
        assert not thread.is_alive(), "generate hung after a worker failed"
    assert [str(e) for e in errors] == ["injected worker failure"]
    monkeypatch.setattr(Breaker, "record", real_record)
    kept = _labelled_in_cache(tmp_path)
    with FakeEndpoint() as fake:
        rerun = generate(_config(tmp_path, fake.url), RunLayout(tmp_path))
    assert kept >= 4 and rerun["counts"]["requests_sent"] == 40 - kept


def test_kill_9_while_invalid_answers_are_asked_again_loses_nothing(tmp_path: Path) -> None:
    with FakeEndpoint(answer="") as empty, pytest.raises(UserError, match="looks broken"):
        generate(_config(tmp_path, empty.url), RunLayout(tmp_path))
    assert (tmp_path / "generate" / "retry-invalid.json").exists()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    with FakeEndpoint(capacity=1, service_s=0.1) as slow:
        _config(tmp_path, slow.url)
        child = subprocess.Popen([sys.executable, "-m", "distill.cli", "generate", "-c", str(tmp_path / "c.yaml"),
                                  "--run-dir", str(tmp_path)], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while slow.answered < 6 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # past a commit group
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    healed = _labelled_in_cache(tmp_path)
    assert 6 <= healed < 40
    assert (tmp_path / "generate" / "retry-invalid.json").exists()  # the killed retry did not finish
    with FakeEndpoint() as healthy:
        final = generate(_config(tmp_path, healthy.url), RunLayout(tmp_path))
        assert len(healthy.requests) == 40 - healed  # what the killed run relabelled is not asked again
    assert final["partial"] is None and all(r["label"] == "billing" for r in _rows(tmp_path))
    assert not (tmp_path / "generate" / "retry-invalid.json").exists()


def test_a_server_dying_mid_run_makes_the_run_partial_and_the_rerun_sends_only_the_rest(tmp_path: Path) -> None:
    with FakeEndpoint(stop_after=5) as dying:
        first = generate(_config(tmp_path, dying.url, rows=10, max_failures_in_a_row=100), RunLayout(tmp_path))
    assert first["partial"] == "5 rows failed"
    with FakeEndpoint() as healthy:
        rerun = generate(_config(tmp_path, healthy.url, rows=10), RunLayout(tmp_path))
    assert rerun["counts"]["requests_sent"] == 5 and rerun["partial"] is None


def test_the_dry_run_refuses_an_oversize_row_as_the_real_run_does(tmp_path: Path, tiny_model: Path) -> None:
    config = study_config(tiny_model, DEMO_INPUTS)
    config["teacher"]["server"]["max_model_len"] = 64  # shorter than the instruction: every row is oversize
    path = write_config(tmp_path / "c.yaml", config)
    result = runner.invoke(app, ["generate", "-c", str(path), "--run-dir", str(tmp_path), "--dry-run"])
    assert result.exit_code == 1 and "exceeds max_model_len 64" in result.stderr


def test_a_retry_of_rows_the_teacher_truly_answers_badly_finishes_instead_of_stopping_every_run(
        tmp_path: Path) -> None:
    """A healthy teacher that answers a third of the rows outside the label set: asked again, it answers them
    badly again. Those re-asked rows must not fill the health window, or every retry run stops and re-marks."""
    def script(text: str) -> tuple[str, float]:
        return ("no idea" if len(text) % 3 == 0 else "billing"), -0.1

    with FakeEndpoint(script=script) as fake:
        first = generate(_config(tmp_path, fake.url), RunLayout(tmp_path))
        assert 16 <= first["counts"]["invalid"] < 32 and first.get("partial") is None  # enough to fill the window
        result = runner.invoke(app, ["generate", "-c", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path),
                                     "--retry-invalid"])
        assert result.exit_code == 0, result.output
    assert not (tmp_path / "generate" / "retry-invalid.json").exists()


def test_recorded_answers_alone_refuse_a_fidelity_check(tmp_path: Path) -> None:
    config = study_config("fake-model", DEMO_INPUTS, cost={"teacher_price_per_hour": 0, "student_price_per_hour": 1,
                                                           "train_price_per_hour": 1, "teacher_input_per_1m": 1,
                                                           "teacher_output_per_1m": 1})
    answers = write_csv(tmp_path / "answers.csv", [{"text": "hello", "answer": "billing"}])
    config["teacher"] = {"recorded": str(answers), "fidelity_check": 5}
    with pytest.raises(UserError, match="teacher.fidelity_check"):
        load_config(write_config(tmp_path / "r.yaml", config))
