"""The train stage in two processes (torchrun, gloo on CPU) gives the adapter one process gives, and one manifest."""

import json
import subprocess
import sys
from pathlib import Path

from distill.artifacts import write_json
from helpers import DEMO_INPUTS, REPO, finished_filter, study_config, write_config


def _prepare(run_dir: Path) -> None:
    rows = []
    for i in range(20):
        label = ["billing", "refund"][i % 2]
        rows.append({"id": f"row{i}", "text": f"message number {i} about my account", "gold": None, "raw": label,
                     "label": label, "error": None, "rationale": None, "vote_share": None, "samples": "[]",
                     "logprob": -0.1, "top_logprobs": "[]", "prompt_tokens": 10, "completion_tokens": 2,
                     "latency_ms": 5.0, "finish_reason": "stop", "serving_s": 0.01})
    finished_filter(run_dir, rows[:16], rows[16:])
    write_json(run_dir / "generate" / "manifest.json", {"stage": "generate", "outputs": {}, "counts": {}})


def _train(config: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "distill.cli", "train", "-c", str(config), "--run-dir", str(run_dir), *extra]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)


def test_two_processes_train_the_same_adapter_as_one(tmp_path: Path, tiny_model: Path) -> None:
    from safetensors.torch import load_file
    from torch.testing import assert_close

    config = study_config(tiny_model, DEMO_INPUTS)
    # No dropout and float32 throughout: what remains between one and two processes is float rounding.
    config["student"].update({"epochs": 2, "batch_size": 8, "learning_rate": 0.01, "mixed_precision": "no",
                              "lora": {"r": 8, "alpha": 16, "dropout": 0.0}, "export_merged": False})
    path = write_config(tmp_path / "c.yaml", config)
    one, two = tmp_path / "one", tmp_path / "two"
    for run_dir in (one, two):
        _prepare(run_dir)
    single = _train(path, one)
    assert single.returncode == 0, single.stderr[-3000:]
    double = _train(path, two, "--devices", "2")
    assert double.returncode == 0, double.stderr[-3000:]  # before: rank 1 returned {} and the CLI raised KeyError

    assert double.stdout.count("train: done") == 2, "every rank returns the manifest rank 0 wrote"
    manifests = sorted(p.relative_to(two) for p in two.rglob("*manifest*.json"))
    assert manifests == [Path("filter/manifest.json"), Path("generate/manifest.json"), Path("train/manifest.json")]
    assert not list(two.rglob("*.tmp")), "no half-written file from a second writer"
    first, second = (json.loads((d / "train" / "manifest.json").read_text()) for d in (one, two))
    assert second["processes"] == 2 and first["processes"] == 1
    assert first["counts"] == second["counts"], "same steps: batch_size is the step's batch, split over processes"
    a = load_file(one / "train" / "adapter" / "adapter_model.safetensors")
    b = load_file(two / "train" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert_close(b[key], a[key], atol=1e-4, rtol=1e-3, msg=key)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k), "training moved the adapter"


def test_devices_option_relaunches_the_same_command_under_torchrun() -> None:
    from student.distributed import torchrun_command

    command = torchrun_command(2, ["train", "-c", "s.yaml", "--devices", "2", "--run-dir", "2", "--devices=2"])
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert command[5:] == ["-m", "distill.cli", "train", "-c", "s.yaml", "--run-dir", "2"]


def test_more_devices_than_gpus_is_refused_before_any_process_starts(monkeypatch) -> None:
    import pytest
    import torch

    from distill.errors import UserError
    from student.distributed import check_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_devices(1)
    with pytest.raises(UserError, match="--devices 2: this machine shows 1 GPU"):
        check_devices(2)


def test_batch_size_is_split_between_processes(monkeypatch) -> None:
    import pytest

    from distill.errors import UserError
    from student.distributed import per_device_batch

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert per_device_batch(16) == 8
    with pytest.raises(UserError, match="student.batch_size=15 does not split over 2 processes"):
        per_device_batch(15)
