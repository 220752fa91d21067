"""`distill serve` on the real demo student model: a finished run with SmolLM2-135M-Instruct as teacher and
student (40 support messages, 12 held out, one epoch), then `distill serve` as a process in cascade and shadow
mode, asked with the official openai client. Three vLLM starts in all: the teacher (one server, for the run and
for serving), compare's own student, and the adapter `distill serve` is pointed at (`serve.student_url`).

No gold (the rule decides on agreement) and `compare.target_quality: 0.75`: the cheapest threshold whose blend
agrees with the teacher on 75% of the 12 test queries. One always exists where the teacher answers validly (the
student keeping only its most confident answer blends to at least 11 of 12), so compare writes a threshold to
route by, whatever the student learnt in one epoch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from distill.artifacts import read_rows
from distill.config import ServerConfig, load_config
from distill.layout import RunLayout
from helpers import DEMO_INPUTS, DEMO_LABELS, REPO, study_config, write_config
from teacher.server import VLLMServer, free_port

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
SERVER = {"max_model_len": 512, "cpu_kv_cache_gib": 1, "startup_timeout_s": 600}


@dataclass
class DemoRun:
    config: Path  # the run's config, with `serve` pointed at the student server started here
    layout: RunLayout
    metrics: dict
    texts: list[str]  # compare's test queries
    compared: dict[str, dict]  # compare's answers by text


def _config(teacher_url: str) -> dict:
    config = study_config(MODEL, DEMO_INPUTS)
    config["data"]["gold_column"] = None
    config["teacher"]["url"] = teacher_url
    config["student"]["export_merged"] = False
    config["compare"] = {"max_concurrency": 4, "prompt_baseline": False, "student_serving": "adapter",
                         "target_quality": 0.75}
    return config


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    from distill.models import pull
    from distill.pipeline import run_pipeline
    from student.serve import serve_adapter

    folder = tmp_path_factory.mktemp("serve-demo")
    with VLLMServer(str(pull(MODEL)), MODEL, ServerConfig(**SERVER), folder / "teacher.log") as teacher:
        raw = _config(teacher.base_url)
        config, layout = load_config(write_config(folder / "demo.yaml", raw)), RunLayout(folder / "run")
        run_pipeline(config, layout)
        with serve_adapter(config, layout, folder / "student.log") as (student, _):
            raw["serve"] = {"student_url": student.base_urls[0], "student_model_name": student.model}
            compared = {row["text"]: row for row in read_rows(layout.compare.answers)}
            yield DemoRun(write_config(folder / "serve.yaml", raw), layout,
                          json.loads(layout.compare.metrics.read_text()), list(compared), compared)


@contextmanager
def serving(run: DemoRun, mode: str) -> Iterator[str]:
    """`distill serve` as a process; its base URL once /health answers."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "distill.cli", "serve", "-c", str(run.config), "--run-dir",
                                str(run.layout.root), "--port", str(port), "--mode", mode], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "distill serve did not come up in 120 s"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def ask_all(url: str, texts: list[str]) -> list[tuple[str | None, httpx.Headers]]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)

    def one(text: str) -> tuple[str | None, httpx.Headers]:
        raw = client.chat.completions.with_raw_response.create(
            model="demo", messages=[{"role": "user", "content": text}])
        return raw.parse().choices[0].message.content, raw.headers

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, texts))


def logged(run: DemoRun, mode: str) -> dict[str, dict]:
    lines = run.layout.serve.traffic.read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines) if r["mode"] == mode}


def metric(page: str, name: str, labels: str = "") -> float:
    """A counter's value in Prometheus text (0 where absent)."""
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", page, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_cascade_on_the_demo_models_routes_by_the_threshold_compare_wrote(demo: DemoRun) -> None:
    cascade = demo.metrics["cascade"]
    threshold, kind = cascade["threshold"], cascade["confidence"]
    if threshold is None:  # compare found no threshold: serving a cascade is refused, by name
        refused = subprocess.run([sys.executable, "-m", "distill.cli", "serve", "-c", str(demo.config), "--run-dir",
                                  str(demo.layout.root), "--mode", "cascade"], cwd=REPO, capture_output=True,
                                 text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        assert refused.returncode == 1 and "compare found no cascade threshold" in refused.stderr
        pytest.skip(f"compare found no cascade ({cascade}): refused as it should be; nothing to route")
    with serving(demo, "cascade") as url:
        answers = ask_all(url, demo.texts)
        page = httpx.get(url + "/metrics").text
    log = logged(demo, "cascade")
    assert {h["x-request-id"] for _, h in answers} == set(log), "every acknowledged request is logged"
    assert all(content in DEMO_LABELS for content, _ in answers), "every answer is valid for the task"
    for content, headers in answers:
        record = log[headers["x-request-id"]]
        student = record["student"]
        sure = student["answer"] is not None and student["confidence"] >= threshold
        assert (record["answered_by"], headers["x-distill-answered-by"]) == (("student",) * 2 if sure
                                                                               else ("teacher",) * 2)
        assert record["threshold"] == threshold and record["answer"] == content
        assert record["escalated"] == (None if sure else "low_confidence" if student["answer"] else "invalid")
        # The confidence is compare's measure of the same answer: the student as compare served it, greedy.
        offline = demo.compared[record["text"]]["adapter_logprob"]
        expected = offline / max(student["completion_tokens"], 1) if kind == "mean_token_logprob" else offline
        assert student["confidence"] == pytest.approx(expected, abs=0.05)
    by_student = sum(r["answered_by"] == "student" for r in log.values())
    assert by_student >= 1, "the student keeps at least its most confident answer (compare's threshold)"
    assert metric(page, "distill_serve_requests_total", '{mode="cascade"}') == len(demo.texts)
    assert metric(page, "distill_serve_answers_total", '{backend="student"}') == by_student
    assert metric(page, "distill_serve_answers_total", '{backend="teacher"}') == len(log) - by_student
    assert metric(page, "distill_serve_escalations_total", '{reason="low_confidence"}') == sum(
        r["escalated"] == "low_confidence" for r in log.values())


def test_shadow_on_the_demo_models_logs_both_and_agrees_as_compare_measured(demo: DemoRun) -> None:
    with serving(demo, "shadow") as url:
        answers = ask_all(url, demo.texts)
        page = httpx.get(url + "/metrics").text
    log = logged(demo, "shadow")
    assert {h["x-request-id"] for _, h in answers} == set(log), "every acknowledged request is logged"
    for content, headers in answers:
        record = log[headers["x-request-id"]]
        student, teacher = record["student"]["answer"], record["teacher"]["answer"]
        assert student in DEMO_LABELS and teacher in DEMO_LABELS, "both asked, both logged, both valid"
        assert (content, headers["x-distill-answered-by"]) == (teacher, "teacher"), "the client gets the teacher's"
        assert record["agree"] == float(student == teacher)
    same = sum(r["student"]["answer"] == demo.compared[r["text"]]["adapter"]
               and r["teacher"]["answer"] == demo.compared[r["text"]]["teacher"] for r in log.values())
    assert same >= 0.75 * len(log), "live greedy answers are the ones compare recorded (same prompts, same models)"
    agreed = sum(r["agree"] for r in log.values())
    low, high = demo.metrics["agreement_ci"]
    assert low <= agreed / len(log) <= high, "live agreement within compare's interval on the same queries"
    assert metric(page, "distill_serve_requests_total", '{mode="shadow"}') == len(demo.texts)
    assert metric(page, "distill_serve_shadow_pairs_total", '{agree="yes"}') == agreed
    assert metric(page, "distill_serve_shadow_pairs_total", '{agree="no"}') == len(log) - agreed
