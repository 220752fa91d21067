"""`distill serve` through the official openai client: scripted student and teacher endpoints (fake_openai.py)
behind the real router, the real HTTP server, the real traffic log; `distill serve` itself as a process where
what is tested is the process (a kill -9)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from aiohttp import web

from distill.config import load_config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.serve.plan import load_plan
from distill.serve.run import build
from fake_openai import FakeEndpoint
from helpers import DEMO_INPUTS, DEMO_LABELS, REPO, study_config, write_config
from teacher.server import free_port

THRESHOLD = -1.0  # compare's cascade threshold in these tests: the student answers at confidence >= -1


def script(prompt: str) -> tuple[str, float]:
    """The student: sure of refunds, unsure of shipping, and answers nonsense to anything about a 'poem'."""
    if "poem" in prompt:
        return "a sonnet", -0.1
    return ("refund", -0.2) if "refund" in prompt else ("shipping", -3.0)


def make_run(tmp_path: Path, student: str, teacher: str, serve: dict | None = None, verdict: str = "cascade",
             threshold: float | None = THRESHOLD) -> tuple[Path, RunLayout]:
    """A config on the scripted endpoints and a run folder holding what compare would have written."""
    raw = study_config("fake-model", DEMO_INPUTS, serve={"student_url": student, **(serve or {})})
    raw["teacher"] = {**raw["teacher"], "url": teacher}
    path = write_config(tmp_path / "serve.yaml", raw)
    config, layout = load_config(path), RunLayout(tmp_path / "run")
    layout.compare.folder.mkdir(parents=True)
    layout.manifest("compare").write_text(json.dumps({"config": config.model_dump(mode="json")}))
    layout.compare.metrics.write_text(json.dumps({
        "headline": "merged", "recommendation": {"verdict": verdict},
        "cascade": {"confidence": "answer_logprob", "threshold": threshold, "student_share": 0.5}}))
    return path, layout


@contextmanager
def serving(config_path: Path, layout: RunLayout, mode: str | None = None) -> Iterator[tuple[openai.OpenAI, str]]:
    """The server `distill serve` builds, on its own event loop in a thread; an openai client pointed at it."""
    config, port = load_config(config_path), free_port()
    loop, ready = asyncio.new_event_loop(), threading.Event()
    with ExitStack() as stack:
        runner = web.AppRunner(build(config, layout, stack, mode))

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        ready.wait(10)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            yield openai.OpenAI(base_url=url, api_key=os.environ.get("SERVE_TOKEN", "none"), max_retries=0), url
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)


def ask(client: openai.OpenAI, text: str, **params: object) -> tuple[str | None, httpx.Headers]:
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": text}], **params)
    return raw.parse().choices[0].message.content, raw.headers


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cascade_routes_by_the_threshold_compare_wrote(tmp_path: Path) -> None:
    with FakeEndpoint(script=script) as student, FakeEndpoint(answer="billing") as teacher:
        path, layout = make_run(tmp_path, student.url, teacher.url)
        with serving(path, layout) as (client, _):
            sure, sure_headers = ask(client, "I want a refund")
            unsure, unsure_headers = ask(client, "where is my parcel, shipping is late")
            invalid, invalid_headers = ask(client, "write me a poem")
    assert (sure, sure_headers["x-distill-answered-by"]) == ("refund", "student")
    assert float(sure_headers["x-distill-confidence"]) == pytest.approx(-0.2)
    assert (unsure, unsure_headers["x-distill-answered-by"], unsure_headers["x-distill-escalated"]) == (
        "billing", "teacher", "low_confidence")
    assert (invalid, invalid_headers["x-distill-escalated"]) == ("billing", "invalid")
    assert [r["messages"][-1]["content"] for r in teacher.requests] == [
        "where is my parcel, shipping is late", "write me a poem"], "only what the student was unsure of escalates"
    assert teacher.requests[0]["messages"][0]["role"] == "system", "the config's teacher prompt is applied"
    assert student.requests[0]["prompt"] == "Message: I want a refund\nCategory:", "and the student's"
    log = lines(layout.serve.traffic)
    assert [(r["answered_by"], r["escalated"], r["threshold"]) for r in log] == [
        ("student", None, THRESHOLD), ("teacher", "low_confidence", THRESHOLD), ("teacher", "invalid", THRESHOLD)]
    assert log[2]["student"]["raw"] == "a sonnet" and log[2]["student"]["answer"] is None


def test_mode_defaults_follow_the_verdict_and_a_missing_cascade_is_refused(tmp_path: Path) -> None:
    path, layout = make_run(tmp_path, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", verdict="distil",
                            threshold=None)
    config = load_config(path)
    assert load_plan(config, layout).mode == "student"
    layout.compare.metrics.write_text(json.dumps({"recommendation": {"verdict": "keep_teacher"},
                                                  "cascade": {"confidence": "answer_logprob", "threshold": -2.0}}))
    assert load_plan(config, layout).mode == "teacher", "an in-sample threshold is not a recommended cascade"
    assert load_plan(config, layout, "cascade").threshold == -2.0, "but may be asked for"
    layout.compare.metrics.write_text(json.dumps({"recommendation": {"verdict": "distil"}, "cascade": None}))
    with pytest.raises(UserError, match="no cascade threshold"):
        load_plan(config, layout, "cascade")
    other = load_config(path, ["student.epochs=7"])
    with pytest.raises(UserError, match="compare measured another student config"):
        load_plan(other, layout)


def test_the_command_names_what_is_missing_before_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from distill.cli import app

    path, layout = make_run(tmp_path, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1",
                            serve={"token_env": "NO_SUCH_TOKEN_VAR"})
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    runner = CliRunner()
    empty = runner.invoke(app, ["serve", "-c", str(path), "--run-dir", str(tmp_path / "empty")])
    assert empty.exit_code == 1 and "run `distill compare` first" in empty.output
    no_token = runner.invoke(app, ["serve", "-c", str(path), "--run-dir", str(layout.root)])
    assert no_token.exit_code == 1 and "NO_SUCH_TOKEN_VAR (serve.token_env) is not set" in no_token.output
    bad_mode = runner.invoke(app, ["serve", "-c", str(path), "--run-dir", str(layout.root), "--mode", "both"])
    assert bad_mode.exit_code == 1 and "choose one of student, teacher, cascade, shadow" in bad_mode.output


def test_shadow_asks_both_answers_with_one_and_logs_both(tmp_path: Path) -> None:
    with FakeEndpoint(script=script) as student, FakeEndpoint(answer="refund") as teacher:
        path, layout = make_run(tmp_path, student.url, teacher.url)
        with serving(path, layout, "shadow") as (client, url):
            answers = [ask(client, text)[0] for text in ("a refund please", "my shipping")]
            metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
    assert answers == ["refund", "refund"], "the teacher answers in shadow mode by default"
    log = lines(layout.serve.traffic)
    assert [(r["student"]["answer"], r["teacher"]["answer"], r["agree"]) for r in log] == [
        ("refund", "refund", 1.0), ("shipping", "refund", 0.0)]
    assert 'distill_serve_shadow_pairs_total{agree="yes"} 1.0' in metrics
    assert 'distill_serve_shadow_pairs_total{agree="no"} 1.0' in metrics


def test_a_dead_teacher_degrades_to_the_student_with_a_warning_and_a_metric(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FakeEndpoint(script=script) as student:
        path, layout = make_run(tmp_path, student.url, dead)
        with serving(path, layout) as (client, url):
            answer, headers = ask(client, "my shipping is late")
            metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
    assert (answer, headers["x-distill-answered-by"]) == ("shipping", "student")
    assert "teacher unavailable" in headers["x-distill-warning"]
    assert "distill_serve_degraded_total 1.0" in metrics
    assert lines(layout.serve.traffic)[0]["degraded"] is True


def test_a_dead_teacher_fails_the_request_where_configured(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FakeEndpoint(script=script) as student:
        path, layout = make_run(tmp_path, student.url, dead, serve={"teacher_down": "fail"})
        with serving(path, layout) as (client, _), pytest.raises(openai.InternalServerError, match="no backend"):
            ask(client, "my shipping is late")
    assert lines(layout.serve.traffic)[0]["answered_by"] is None, "a failed request is logged too"


def test_a_client_system_prompt_or_conversation_is_refused(tmp_path: Path) -> None:
    with FakeEndpoint(script=script) as student, FakeEndpoint() as teacher:
        path, layout = make_run(tmp_path, student.url, teacher.url)
        with serving(path, layout) as (client, _):
            with pytest.raises(openai.BadRequestError, match="applies the study's own prompts"):
                client.chat.completions.create(model="tiny", messages=[
                    {"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "refund"}])
            with pytest.raises(openai.BadRequestError, match="exactly one user message"):
                client.chat.completions.create(model="tiny", messages=[
                    {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"}])
    assert not student.requests and not teacher.requests


def test_bearer_token_is_required_and_never_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVE_TOKEN", "s3cret-token")
    with FakeEndpoint(script=script) as student, FakeEndpoint() as teacher:
        path, layout = make_run(tmp_path, student.url, teacher.url, serve={"token_env": "SERVE_TOKEN"})
        with serving(path, layout) as (client, url):
            assert ask(client, "refund me")[0] == "refund"
            with pytest.raises(openai.AuthenticationError):
                client.with_options(api_key="wrong").chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "refund me"}])
            assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200, "health stays open"
            assert httpx.get(url.removesuffix("/v1") + "/metrics").status_code == 401
    logged = "".join(p.read_text() for p in layout.serve.folder.iterdir())
    assert "s3cret" not in logged and "refund me" in logged


def test_stream_true_passes_the_teachers_tokens_through(tmp_path: Path) -> None:
    def stream(client: openai.OpenAI, text: str) -> list:
        return list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}],
                                                   stream=True, stream_options={"include_usage": True}))

    def content(chunks: list) -> list[str]:
        return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]

    with FakeEndpoint(script=script) as student, FakeEndpoint(answer="billing") as teacher:
        path, layout = make_run(tmp_path, student.url, teacher.url)
        with serving(path, layout) as (client, _):
            escalated, sure = stream(client, "shipping"), stream(client, "refund")
            models = client.models.list()
    assert content(escalated) == list("billing"), "the teacher's tokens arrive as the teacher sends them"
    assert escalated[-1].usage is not None and escalated[-1].usage.total_tokens == 13
    assert content(sure) == ["refund"], "a student answer is validated first, then sent whole"
    log = lines(layout.serve.traffic)
    assert [(r["answered_by"], r["answer"], r["escalated"]) for r in log] == [
        ("teacher", "billing", "low_confidence"), ("student", "refund", None)]
    (pair,) = lines(layout.serve.teacher_answers)
    assert "stream" not in pair["request"], "recorded as the request generate sends"
    assert pair["response"]["choices"][0]["message"]["content"] == "billing"
    assert pair["response"]["choices"][0]["logprobs"]["content"][0]["logprob"] == -0.25
    assert [m.id for m in models.data] == ["tiny"]


def test_a_streamed_escalation_to_a_dead_teacher_degrades_like_any_other(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FakeEndpoint(script=script) as student:
        path, layout = make_run(tmp_path, student.url, dead)
        with serving(path, layout) as (client, _):
            raw = client.chat.completions.with_raw_response.create(
                model="tiny", messages=[{"role": "user", "content": "shipping"}], stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert (text, raw.headers["x-distill-answered-by"]) == ("shipping", "student")
    assert "teacher unavailable" in raw.headers["x-distill-warning"]


def test_a_teacher_stream_that_breaks_off_ends_with_an_error_and_is_logged(tmp_path: Path) -> None:
    with FakeEndpoint(script=script) as student, FakeEndpoint(answer="billing", cut_stream_after=3) as teacher:
        path, layout = make_run(tmp_path, student.url, teacher.url)
        with serving(path, layout, "teacher") as (client, _):
            received = []
            with pytest.raises(openai.APIError, match="ended before"):
                for chunk in client.chat.completions.create(
                        model="tiny", messages=[{"role": "user", "content": "refund"}], stream=True):
                    received.append(chunk.choices[0].delta.content)
    assert "".join(received) == "bi", "the tokens that came were relayed"
    (record,) = lines(layout.serve.traffic)
    assert record["answered_by"] is None and "ended before [DONE]" in record["teacher"]["error"]
    assert not layout.serve.teacher_answers.read_text(), "a broken answer is not recorded as a teacher label"


def test_traffic_becomes_inputs_and_recorded_teacher_answers(tmp_path: Path) -> None:
    from distill.data.inputs import load_examples

    with FakeEndpoint(script=script) as student, FakeEndpoint(answer="billing") as teacher:
        path, layout = make_run(tmp_path, student.url, teacher.url)
        with serving(path, layout) as (client, _):
            for text in ("refund now", "shipping?", "refund now"):
                ask(client, text)
    config = load_config(path, [f"data.inputs={layout.serve.inputs}"])
    assert [e.text for e in load_examples(config.data.inputs, config.data)] == ["refund now", "shipping?"]
    (pair,) = lines(layout.serve.teacher_answers)
    assert pair["request"]["messages"][-1] == {"role": "user", "content": "shipping?"}
    assert pair["request"]["model"] == "fake-model" and pair["response"]["choices"][0]["message"]["content"] == (
        "billing")
    assert len(lines(layout.serve.traffic)) == 3
    _next_run_asks_only_what_the_teacher_never_answered(tmp_path, path, layout)


def _next_run_asks_only_what_the_teacher_never_answered(tmp_path: Path, path: Path, layout: RunLayout) -> None:
    """The next run labels the served inputs; the escalated one is a recorded teacher answer, never paid again."""
    from teacher.generate import generate

    raw = yaml_load(path)
    raw["data"] = {k: v for k, v in raw["data"].items() if k not in ("test_size", "max_test")}
    raw["data"] |= {"inputs": str(layout.serve.inputs), "test": str(DEMO_INPUTS)}
    with FakeEndpoint(answer="refund") as teacher:
        raw["teacher"] |= {"url": teacher.url, "recorded": str(layout.serve.teacher_answers)}
        manifest = generate(load_config(write_config(tmp_path / "next.yaml", raw)), RunLayout(tmp_path / "next"))
        assert [r["messages"][-1]["content"] for r in teacher.requests] == ["refund now"]
    assert manifest["counts"]["labelled"] == 2 and manifest["counts"]["requests_sent"] == 1


def test_the_log_rotates_and_a_restart_does_not_repeat_inputs(tmp_path: Path) -> None:
    with FakeEndpoint(script=script) as student, FakeEndpoint() as teacher:
        path, layout = make_run(tmp_path, student.url, teacher.url, serve={"log_rotate_mb": 0.0005})
        for _ in range(2):
            with serving(path, layout) as (client, _):
                for i in range(4):
                    ask(client, f"refund {i}")
    rotated = sorted(layout.serve.folder.glob("traffic-*.jsonl"))
    assert rotated, "a 500-byte limit rotates"
    served = [r for p in [*rotated, layout.serve.traffic] for r in lines(p)]
    assert len(served) == 8
    assert len(lines(layout.serve.inputs)) == 4


def test_a_log_line_that_cannot_be_written_fails_the_request(tmp_path: Path) -> None:
    with FakeEndpoint(script=script) as student, FakeEndpoint() as teacher:
        path, layout = make_run(tmp_path, student.url, teacher.url)
        layout.serve.folder.mkdir()
        layout.serve.traffic.symlink_to("/dev/full")  # every write: ENOSPC, as on a full disk
        with serving(path, layout) as (client, url):
            with pytest.raises(openai.InternalServerError, match="traffic log not written.*No space left"):
                ask(client, "refund")
            metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
    assert 'distill_serve_errors_total{kind="log"} 1.0' in metrics


def test_kill_9_loses_no_acknowledged_log_line(tmp_path: Path) -> None:
    with FakeEndpoint(script=script, capacity=4, service_s=0.005) as student, FakeEndpoint() as teacher:
        path, layout = make_run(tmp_path, student.url, teacher.url)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "distill.cli", "serve", "-c", str(path), "--run-dir",
                                   str(layout.root), "--port", str(port)], cwd=REPO,
                                  env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=10)
            acknowledged: list[str] = []

            def one(i: int) -> None:
                raw = client.chat.completions.with_raw_response.create(
                    model="tiny", messages=[{"role": "user", "content": f"refund {i}"}])
                acknowledged.append(raw.headers["x-request-id"])

            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(one, i) for i in range(400)]
                while len(acknowledged) < 30:
                    time.sleep(0.01)
                server.send_signal(signal.SIGKILL)
                server.wait()
                for future in futures:
                    future.exception()
        finally:
            server.kill()
    logged = {r["id"] for r in lines(layout.serve.traffic)}  # every line parses: none is torn
    assert len(acknowledged) >= 30 and set(acknowledged) <= logged
    assert len(logged) < 400, "the server died mid-traffic"


def test_student_slots_and_deadline_bound_the_wait_and_a_late_student_escalates(tmp_path: Path) -> None:
    with FakeEndpoint(script=script, capacity=64, service_s=0.5) as student, FakeEndpoint(answer="billing") as teacher:
        # 2 slots, 0.5 s an answer, 0.75 s deadline counting the wait: 2 answer in time, the others escalate.
        path, layout = make_run(tmp_path, student.url, teacher.url,
                                serve={"student_concurrency": 2, "student_timeout_s": 0.75})
        with serving(path, layout) as (client, _), ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda i: ask(client, f"refund {i}"), range(6)))
    routes = sorted((h["x-distill-answered-by"], h.get("x-distill-escalated")) for _, h in results)
    assert routes == [("student", None)] * 2 + [("teacher", "student_failed")] * 4
    assert all("no answer in 0.75 s" in r["student"]["error"] for r in lines(layout.serve.traffic)
               if r["escalated"])


def test_shadow_on_real_vllm(tmp_path: Path, served_tiny) -> None:
    """The tiny model served by vLLM as both student (completions, label set enforced) and teacher (chat)."""
    path, layout = make_run(tmp_path, served_tiny.base_url, served_tiny.base_url,
                            serve={"student_model_name": "tiny-teacher"})
    raw = yaml_load(path)
    raw["teacher"]["served_model_name"] = "tiny-teacher"
    write_config(path, raw)
    layout.manifest("compare").write_text(json.dumps({"config": load_config(path).model_dump(mode="json")}))
    with serving(path, layout, "shadow") as (client, _):
        answers = [ask(client, text)[0] for text in ("I was charged twice", "my parcel is lost")]
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "I was charged twice"}], stream=True) if c.choices)
    with serving(path, layout, "teacher") as (client, _):
        relayed = [c.choices[0].delta.content for c in client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "I was charged twice"}], stream=True)
            if c.choices and c.choices[0].delta.content]
    log = lines(layout.serve.traffic)
    assert "".join(relayed) == log[0]["teacher"]["raw"], "vLLM's stream, relayed, is its greedy answer"
    assert log[-1]["teacher"]["completion_tokens"] > 0 and log[-1]["answered_by"] == "teacher"
    log = log[:3]
    assert all(r["student"]["answer"] in DEMO_LABELS and r["student"]["confidence"] < 0 for r in log)
    assert [r["answer"] for r in log[:2]] == answers and streamed == answers[0], "greedy answers repeat"
    assert all(r["agree"] in (0.0, 1.0) for r in log)
    pairs = lines(layout.serve.teacher_answers)
    assert len(pairs) == 4 and pairs[0]["response"]["usage"]["prompt_tokens"] > 0
    assert pairs[3]["request"] == pairs[0]["request"], "a streamed answer is recorded as the request generate sends"


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_recorded_answers_alone_serve_the_student_only(tmp_path: Path) -> None:
    """No live teacher to escalate to: a mode that needs one is refused by name, not a crash opening None."""
    path, layout = make_run(tmp_path, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", verdict="keep_teacher")
    raw = yaml_load(path)
    recorded = tmp_path / "answers.csv"
    recorded.write_text("text,answer\nhello,billing\n")
    raw["teacher"] = {"recorded": str(recorded)}
    raw["cost"] = {**raw.get("cost", {}), "teacher_input_per_1m": 1.0, "teacher_output_per_1m": 2.0}
    config = load_config(write_config(tmp_path / "recorded.yaml", raw))
    with pytest.raises(UserError, match="needs a live teacher"):
        load_plan(config, layout)
    assert load_plan(config, layout, "student").mode == "student"
