"""Serving the trained student through vLLM: base weights plus the LoRA adapter, or the merged checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distill.artifacts import read_manifest
from distill.config import Config
from distill.errors import UserError
from distill.models import resolve_model
from distill.tasks import ClassificationTask
from teacher.client import Target
from teacher.server import VLLMServer

STUDENT_NAME = "student"


def student_request(task: ClassificationTask, config: Config, text: str) -> dict[str, Any]:
    return {
        "prompt": task.student_prompt(text),
        "temperature": 0.0,
        "max_tokens": config.student.max_tokens,
        "logprobs": 1,
        "extra_body": {"structured_outputs": task.student_constraint()},
    }


@contextmanager
def serve_student(config: Config, run_dir: Path, log_path: Path) -> Iterator[Target]:
    read_manifest(run_dir / "train", "distill train")
    train_dir = run_dir / "train"
    server = config.student.server
    if config.compare.student_serving == "merged":
        if not (train_dir / "merged").is_dir():
            raise UserError(
                f"{train_dir}: no merged student; rerun `distill train` with compare.student_serving=merged")
        with VLLMServer(str(train_dir / "merged"), STUDENT_NAME, server, log_path) as vllm:
            yield Target((vllm.base_url,), STUDENT_NAME)
        return
    base = resolve_model(config.student.model)
    with VLLMServer(base, "student-base", server, log_path, lora_modules={STUDENT_NAME: train_dir / "adapter"},
                    max_lora_rank=config.student.lora.r) as vllm:
        yield Target((vllm.base_url,), STUDENT_NAME)
