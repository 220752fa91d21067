"""`distill run` on a real pipeline (tiny model, real vLLM, real peft): kills, resumes, skips, gates."""

import copy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from distill.artifacts import read_rows
from distill.cli import EXIT_GATE_FAILED
from helpers import DEMO_INPUTS, study_config, write_config

pytestmark = pytest.mark.slow


def _run(config: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "distill.cli", "run", "-c", str(config), "--run-dir", str(run_dir), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=1200)


def _kill_when(config: Path, run_dir: Path, ready: Callable[[], bool]) -> None:
    command = [sys.executable, "-m", "distill.cli", "run", "-c", str(config), "--run-dir", str(run_dir)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while not ready() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before the kill"
    assert ready(), "the moment to kill never came"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def _stored_answers(cache: Path) -> int:
    """Teacher answers committed to the cache so far (read-only, beside the writer)."""
    try:
        with sqlite3.connect(f"file:{cache}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints the Trainer finished writing (it writes trainer_state.json last)."""
    return sorted((run_dir / "train" / "checkpoints").glob("checkpoint-*/trainer_state.json"))


def _servers_of(model: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"api_server --model {model}"], capture_output=True, text=True)
    return found.stdout.split()


def _stage_actions(run_dir: Path) -> dict[str, str]:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {s["stage"]: s["action"] for s in summary["stages"]}


def test_run_resumes_after_kills_skips_what_is_done_and_gates(tmp_path: Path, tiny_model: Path) -> None:
    settings = study_config(tiny_model, DEMO_INPUTS)
    settings["teacher"]["concurrency"] = 1  # answers arrive one by one, so the kill lands mid-labelling
    # A checkpoint at every step, so the kill in training lands after the first and before the last.
    settings["student"].update(epochs=3, evals_per_epoch=3, early_stopping_patience=None)
    config = write_config(tmp_path / "study.yaml", settings)
    run_dir = tmp_path / "run"

    # Killed while the teacher labels, once it has answered: its server goes down with it, and the answers
    # stored so far are kept.
    _kill_when(config, run_dir, lambda: _stored_answers(run_dir / "generate" / "cache.sqlite") > 0)
    time.sleep(5)
    assert _servers_of(tiny_model) == [], "a killed run must not leave its vLLM server behind"
    stored = _stored_answers(run_dir / "generate" / "cache.sqlite")
    assert 0 < stored < 40, stored

    # Killed while the student trains, after its first checkpoint: the next run resumes from a checkpoint.
    _kill_when(config, run_dir, lambda: bool(_complete_checkpoints(run_dir)))
    assert not (run_dir / "train" / "manifest.json").exists(), "the kill came after training had finished"
    generate_manifest = json.loads((run_dir / "generate" / "manifest.json").read_text())
    assert generate_manifest["counts"]["requests_sent"] == 40 - stored, "no stored answer was asked for again"
    outputs = read_rows(run_dir / "generate" / "outputs.parquet")
    assert len(outputs) == 40 and len({r["id"] for r in outputs}) == 40

    # Killed while compare serves the models: the next run keeps the finished student and redoes only compare.
    _kill_when(config, run_dir, (run_dir / "compare" / "teacher_server.log").exists)
    time.sleep(5)
    assert _servers_of(tiny_model) == []
    train_manifest = json.loads((run_dir / "train" / "manifest.json").read_text())
    assert train_manifest["resumed_from"].startswith("checkpoint-"), train_manifest["resumed_from"]
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
    changed = copy.deepcopy(settings)
    changed["filter"]["eval_fraction"] = 0.25
    result = _run(write_config(config, changed), run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _stage_actions(run_dir) == {"generate": "skipped", "filter": "ran", "train": "ran", "compare": "ran"}
    kept = json.loads((run_dir / "filter" / "manifest.json").read_text())["counts"]["rows_kept"]
    assert len(read_rows(run_dir / "filter" / "eval.parquet")) == round(kept * 0.25)
