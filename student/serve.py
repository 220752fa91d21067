"""Serving the trained student through vLLM: base weights plus the LoRA adapter, or the merged checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.models import resolve_model
from distill.stages import read_manifest
from distill.tasks import Task
from student.prompts import StudentPrompter
from teacher.client import Target
from teacher.server import VLLMServer

STUDENT_NAME = "student"
BASE_NAME = "student-base"


def student_requests(task: Task, config: Config, texts: list[str]) -> list[dict[str, Any]]:
    prompter = StudentPrompter(task, config.student)
    return [student_request(task, config, prompter(text)) for text in texts]


def student_request(task: Task, config: Config, prompt: str) -> dict[str, Any]:
    request: dict[str, Any] = {
        "prompt": prompt,
        "temperature": 0.0,
        "max_tokens": task.answer_token_budget(config.student.max_tokens),
        "logprobs": 1,
    }
    constraint = task.student_constraint()
    if constraint is not None:
        request["extra_body"] = {"structured_outputs": constraint}
    return request


@contextmanager
def serve_adapter(config: Config, layout: RunLayout, log_path: Path) -> Iterator[tuple[Target, Target]]:
    """One server with the base weights and the adapter: targets for the student and for the bare base model."""
    read_manifest(layout, "train")
    base = resolve_model(config.student.model)
    with VLLMServer(base, BASE_NAME, config.student.server, log_path,
                    lora_modules={STUDENT_NAME: layout.train.adapter},
                    max_lora_rank=config.student.lora.r) as vllm:
        yield Target((vllm.base_url,), STUDENT_NAME), Target((vllm.base_url,), BASE_NAME)


@contextmanager
def serve_merged(config: Config, layout: RunLayout, log_path: Path) -> Iterator[Target]:
    merged = layout.train.merged
    if not merged.is_dir():
        raise UserError(f"{merged.parent}: no merged student; rerun `distill train` with student.export_merged: true")
    with VLLMServer(str(merged), STUDENT_NAME, config.student.server, log_path) as vllm:
        yield Target((vllm.base_url,), STUDENT_NAME)
