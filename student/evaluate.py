"""Evaluation during training by the task's own metric: the student writes answers to the eval split, and they
are scored against the teacher's labels (token accuracy can read 99% while the task metric reads 90%)."""

from __future__ import annotations

from typing import Any

from distill.tasks import Task

SCORE_KEY = "task_score"  # logged as eval_task_score
# What picks the best checkpoint and drives early stopping: the task score, ties going to the lower eval loss
# (a small eval split often ties; the loss weight is far below one row's share of the score).
SELECTION_KEY = "selection"
LOSS_TIE_BREAK = 1e-6


def generate_answers(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int
                     ) -> list[str]:
    """Greedy answers, batched with left padding, decoded without the prompt."""
    import torch

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True)
            batch = {key: value.to(model.device) for key, value in batch.items()}
            with torch.no_grad():
                output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                        pad_token_id=pad_id)
            answers += tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return answers


def task_score(task: Task, answers: list[str], references: list[str]) -> dict[str, float]:
    """Mean task score against the references, and the share of answers that parse as valid."""
    parsed = [task.parse(answer).value for answer in answers]
    scores = [task.score(p, r) for p, r in zip(parsed, references, strict=True)]
    return {SCORE_KEY: sum(scores) / len(scores), "task_valid_rate": sum(p is not None for p in parsed) / len(parsed)}
