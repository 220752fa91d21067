"""Training by the task metric: early stopping, the checkpoint kept, resume after kill -9, determinism,
DoRA, chat-template prompts and QLoRA's requirements."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.config import StudentConfig, load_config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.tasks import make_task
from helpers import DEMO_INPUTS, finished_filter, study_config, write_config
from student.model import load_student
from student.prompts import StudentPrompter
from student.train import train

pytestmark = pytest.mark.slow


def _study(tmp_path: Path, tiny_model: Path, train_labels: list[str], eval_labels: list[str], **student):
    rows = [{"id": f"inputs:{i}", "text": f"message number {i}", "label": label}
            for i, label in enumerate(train_labels + eval_labels)]
    finished_filter(tmp_path, rows[:len(train_labels)], rows[len(train_labels):])
    config = study_config(tiny_model, DEMO_INPUTS)
    config["student"].update({"batch_size": 4, "learning_rate": 0.01, "export_merged": False, **student})
    return write_config(tmp_path / "c.yaml", config)


def test_early_stopping_stops_after_patience_evaluations_without_a_better_score(tmp_path: Path,
                                                                                tiny_model: Path) -> None:
    # The eval split asks for a label the training rows never show: the task metric cannot improve after the
    # first evaluation, so training stops one evaluation later. Equal scores: the later checkpoint is kept.
    config = _study(tmp_path, tiny_model, ["billing"] * 16, ["refund"] * 4, epochs=4, evals_per_epoch=2,
                    early_stopping_patience=1)
    manifest = train(load_config(config), RunLayout(tmp_path))
    curves = json.loads((tmp_path / "train" / "curves.json").read_text())
    assert [p["step"] for p in curves["eval"]] == [2, 4]
    assert manifest["counts"]["steps"] == 4 < 16, "stopped early"
    assert manifest["best_step"] == 4 and manifest["best_eval_task_score"] == 0.0


def test_the_kept_adapter_is_the_latest_within_one_standard_error_of_the_best(tmp_path: Path,
                                                                               tiny_model: Path) -> None:
    from peft import PeftModel

    from student.evaluate import generate_answers, task_score

    labels = ["billing", "refund"] * 8
    config = load_config(_study(tmp_path, tiny_model, labels, labels[:6], epochs=3, evals_per_epoch=2,
                                early_stopping_patience=None))
    manifest = train(config, RunLayout(tmp_path))
    curves = json.loads((tmp_path / "train" / "curves.json").read_text())
    top = max(curves["eval"], key=lambda p: p["task_score"])
    error = (top["task_score"] * (1 - top["task_score"]) / 5) ** 0.5  # accuracy's sample stdev on 6 rows, / sqrt(6)
    best = [p for p in curves["eval"] if p["task_score"] >= top["task_score"] - error - 1e-9][-1]
    assert manifest["best_step"] == best["step"] and manifest["best_eval_task_score"] == best["task_score"]
    tokenizer, base = load_student(config.student)
    model = PeftModel.from_pretrained(base, tmp_path / "train" / "adapter").eval()
    task = make_task(config.task)
    prompts = [task.student_prompt(f"message number {16 + i}") for i in range(6)]
    answers = generate_answers(model, tokenizer, prompts, task.answer_token_budget(config.student.max_tokens), 4)
    assert task_score(task, answers, labels[:6])["task_score"] == pytest.approx(best["task_score"])


def test_same_seed_same_adapter(tmp_path: Path, tiny_model: Path) -> None:
    from safetensors.torch import load_file

    adapters = []
    for run in ("a", "b"):
        folder = tmp_path / run
        config = load_config(_study(folder, tiny_model, ["billing", "refund"] * 6, ["refund"] * 2, epochs=1))
        train(config, RunLayout(folder))
        adapters.append(load_file(folder / "train" / "adapter" / "adapter_model.safetensors"))
    assert adapters[0].keys() == adapters[1].keys()
    assert all((adapters[0][k] == adapters[1][k]).all() for k in adapters[0])


def test_a_killed_training_resumes_from_its_last_checkpoint(tmp_path: Path, tiny_model: Path) -> None:
    config = _study(tmp_path, tiny_model, ["billing", "refund"] * 100, ["refund"] * 4, epochs=3,
                    evals_per_epoch=10, early_stopping_patience=None, eval_max_rows=2)
    command = [sys.executable, "-m", "distill.cli", "train", "-c", str(config), "--run-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "train" / "checkpoints"
    deadline = time.monotonic() + 600
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the checkpoint's files land; the trainer only links the last complete one
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "train" / "manifest.json").exists(), "the kill must land mid-training"

    subprocess.run(command, check=True, capture_output=True, timeout=900)
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert manifest["resumed_from"] is not None and manifest["resumed_from"].startswith("checkpoint-")
    assert manifest["counts"]["steps"] == 150, "every step once: 200 rows / 4 per batch x 3 epochs"
    # The training bill counts the killed attempt's time up to its checkpoint, not only the resumed tail.
    assert manifest["train_seconds_total"] > manifest["seconds"]


def test_dora_adapter_trains(tmp_path: Path, tiny_model: Path) -> None:
    config = _study(tmp_path, tiny_model, ["billing", "refund"] * 4, ["refund"] * 2, epochs=1,
                    lora={"r": 8, "alpha": 16, "use_dora": True})
    # vLLM cannot load a DoRA adapter, so a DoRA student ships merged (the config refuses it otherwise).
    train(load_config(config, ["compare.student_serving=merged"]), RunLayout(tmp_path))
    assert json.loads((tmp_path / "train" / "adapter" / "adapter_config.json").read_text())["use_dora"] is True


def test_chat_prompts_use_the_students_template(tiny_model: Path) -> None:
    task = make_task(load_config(write_config(tiny_model.parent / "c.yaml",
                                              study_config(tiny_model, DEMO_INPUTS))).task)
    chat = StudentPrompter(task, StudentConfig(model=str(tiny_model), prompt_format="chat"))("where is my parcel")
    plain = StudentPrompter(task, StudentConfig(model=str(tiny_model)))("where is my parcel")
    assert plain == "Message: where is my parcel\nCategory:"
    assert chat.index(plain) > 0 and chat.rstrip().endswith("assistant"), chat


def test_qlora_needs_a_gpu_and_says_so(tiny_model: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="4bit .QLoRA. needs a CUDA GPU and bitsandbytes"):
        load_student(StudentConfig(model=str(tiny_model), quantization="4bit"))
