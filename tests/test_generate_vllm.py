"""The generate stage against a real vLLM server on a tiny model: constrained outputs, signals, kill -9."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.artifacts import read_rows
from distill.config import ServerConfig, load_config
from distill.errors import UserError
from distill.layout import RunLayout
from helpers import DEMO_INPUTS, DEMO_LABELS, study_config, write_config
from teacher.generate import generate
from teacher.server import VLLMServer

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, served: VLLMServer, rows: int, **teacher: object):
    config = study_config("tiny-teacher", DEMO_INPUTS)
    config["data"]["max_inputs"] = rows
    config["teacher"] = {"model": "tiny-teacher", "url": served.base_url, "concurrency": 4, "max_tokens": 8,
                         **teacher}
    return write_config(tmp_path / "c.yaml", config)


def test_choice_outputs_logprobs_and_samples(tmp_path: Path, served_tiny: VLLMServer) -> None:
    config = load_config(_config(tmp_path, served_tiny, 8, samples=3, temperature=1.0, top_logprobs=3))
    manifest = generate(config, RunLayout(tmp_path))
    rows = read_rows(tmp_path / "generate" / "outputs.parquet")
    for row in rows:
        samples = json.loads(row["samples"])
        assert len(samples) == 3 and set(samples) <= set(DEMO_LABELS)
        assert row["label"] in DEMO_LABELS and row["error"] is None
        assert row["vote_share"] == samples.count(row["label"]) / 3 >= 1 / 3
        assert row["logprob"] < 0
        assert 3 <= len(json.loads(row["top_logprobs"])) <= 4  # the top 3, and the sampled token if not among them
    assert manifest["prefix_cache"] is not None and manifest["prefix_cache"]["query_tokens"] > 0


def test_json_constrained_rationale_parses(tmp_path: Path, served_tiny: VLLMServer) -> None:
    config = load_config(_config(tmp_path, served_tiny, 4, rationale=True, max_tokens=400))
    generate(config, RunLayout(tmp_path))
    for row in read_rows(tmp_path / "generate" / "outputs.parquet"):
        assert row["error"] is None, row["raw"]
        assert row["label"] in DEMO_LABELS and isinstance(row["rationale"], str)
        assert json.loads(row["raw"])["label"] == row["label"]


def test_kill_9_then_rerun_loses_and_repeats_nothing(tmp_path: Path, served_tiny: VLLMServer) -> None:
    config = _config(tmp_path, served_tiny, 120, concurrency=1)
    command = [sys.executable, "-m", "distill.cli", "generate", "-c", str(config), "--run-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = tmp_path / "generate" / "cache.sqlite"
    deadline = time.monotonic() + 120
    while _cached(cache) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stored = _cached(cache)
    assert 10 <= stored < 120, "the kill must land mid-run"
    assert not (tmp_path / "generate" / "manifest.json").exists()

    subprocess.run(command, check=True, capture_output=True)
    manifest = json.loads((tmp_path / "generate" / "manifest.json").read_text())
    assert manifest["counts"]["requests_sent"] == 120 - stored
    assert manifest["counts"]["from_cache"] == stored
    rows = read_rows(tmp_path / "generate" / "outputs.parquet")
    assert len(rows) == 120 and len({r["id"] for r in rows}) == 120
    assert all(r["label"] in DEMO_LABELS for r in rows)


def _cached(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_server_is_stopped_when_the_block_raises(tmp_path: Path, tiny_model: Path) -> None:
    server = VLLMServer(str(tiny_model), "doomed", ServerConfig(max_model_len=256, cpu_kv_cache_gib=1),
                        tmp_path / "server.log")
    with pytest.raises(RuntimeError, match="stage failed"), server:
        raise RuntimeError("stage failed")
    assert server.process is not None and server.process.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)


def test_a_server_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    server = VLLMServer(str(tmp_path / "no-such-model"), "broken", ServerConfig(), tmp_path / "server.log")
    with pytest.raises(UserError, match=r"vLLM server for broken exited with code \d+ while starting; log .* ends"):
        with server:
            pass
