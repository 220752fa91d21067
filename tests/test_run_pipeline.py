"""`distill run` on a real pipeline (tiny model, real vLLM, real peft): kills, resumes, skips, gates."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.artifacts import read_rows
from distill.cli import EXIT_GATE_FAILED
from helpers import DEMO_INPUTS, study_config, write_config

pytestmark = pytest.mark.slow


def _run(config: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "distill.cli", "run", "-c", str(config), "--run-dir", str(run_dir), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=1200)


def _kill_when(config: Path, run_dir: Path, ready: Path) -> None:
    command = [sys.executable, "-m", "distill.cli", "run", "-c", str(config), "--run-dir", str(run_dir)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, "the run ended before the kill"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def _servers_of(model: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"api_server --model {model}"], capture_output=True, text=True)
    return found.stdout.split()


def _stage_actions(run_dir: Path) -> dict[str, str]:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {s["stage"]: s["action"] for s in summary["stages"]}


def test_run_resumes_after_kills_skips_what_is_done_and_gates(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path / "study.yaml", study_config(tiny_model, DEMO_INPUTS))
    run_dir = tmp_path / "run"

    # Killed while the teacher labels: its server goes down with it, and answers stored so far are kept.
    _kill_when(config, run_dir, run_dir / "generate" / "cache.sqlite")
    time.sleep(5)
    assert _servers_of(tiny_model) == [], "a killed run must not leave its vLLM server behind"
    with __import__("sqlite3").connect(run_dir / "generate" / "cache.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    # Killed while the student trains.
    _kill_when(config, run_dir, run_dir / "train")
    generate_manifest = json.loads((run_dir / "generate" / "manifest.json").read_text())
    assert generate_manifest["counts"]["requests_sent"] == 40 - stored, "no stored answer was asked for again"
    outputs = read_rows(run_dir / "generate" / "outputs.parquet")
    assert len(outputs) == 40 and len({r["id"] for r in outputs}) == 40

    # Killed while compare serves the models: the next run keeps the finished student and redoes only compare.
    _kill_when(config, run_dir, run_dir / "compare" / "teacher_server.log")
    time.sleep(5)
    assert _servers_of(tiny_model) == []
    train_manifest = json.loads((run_dir / "train" / "manifest.json").read_text())
    assert not (run_dir / "compare" / "manifest.json").exists()

    result = _run(config, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _stage_actions(run_dir) == {"generate": "skipped", "filter": "skipped", "train": "skipped",
                                       "compare": "ran"}
    assert json.loads((run_dir / "generate" / "manifest.json").read_text()) == generate_manifest
    assert json.loads((run_dir / "train" / "manifest.json").read_text()) == train_manifest
    assert "Run in" in result.stdout and "agreement" in result.stdout

    # Nothing changed: every stage is skipped, and a failing gate sets exit code 3.
    result = _run(config, run_dir, "--gate", "agreement>1.5")
    assert result.returncode == EXIT_GATE_FAILED, result.stderr[-3000:]
    assert set(_stage_actions(run_dir).values()) == {"skipped"}
    assert "gate agreement>1.5: FAILED" in result.stderr

    # A new filter setting reruns filter, train and compare, never the teacher.
    changed = study_config(tiny_model, DEMO_INPUTS)
    changed["filter"]["eval_fraction"] = 0.25
    result = _run(write_config(config, changed), run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _stage_actions(run_dir) == {"generate": "skipped", "filter": "ran", "train": "ran", "compare": "ran"}
    kept = json.loads((run_dir / "filter" / "manifest.json").read_text())["counts"]["rows_kept"]
    assert len(read_rows(run_dir / "filter" / "eval.parquet")) == round(kept * 0.25)
