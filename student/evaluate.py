"""Evaluation during training by the task's own metric: the student writes answers to the eval split, and they
are scored against the teacher's labels (token accuracy can read 99% while the task metric reads 90%)."""

from __future__ import annotations

from typing import Any

from distill.tasks import Task

SCORE_KEY = "task_score"  # logged as eval_task_score
ERROR_KEY = "task_score_se"  # its standard error over the eval rows
# What picks the kept checkpoint and drives early stopping (see `selection`).
SELECTION_KEY = "selection"


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
    """Mean task score against the references, its standard error, and the share of answers that parse."""
    import statistics

    parsed = [task.parse(answer).value for answer in answers]
    scores = [task.score(p, r) for p, r in zip(parsed, references, strict=True)]
    error = statistics.stdev(scores) / len(scores) ** 0.5 if len(scores) > 1 else 0.0
    return {SCORE_KEY: sum(scores) / len(scores), ERROR_KEY: error,
            "task_valid_rate": sum(p is not None for p in parsed) / len(parsed)}


def selection(earlier: list[tuple[float, float]], score: float, error: float) -> float:
    """The value the Trainer maximises to keep a checkpoint, given the (score, standard error) of the evaluations
    before this one: the kept checkpoint is the latest whose score is within one standard error of the best.

    A small eval split is noisy (100 rows: about 0.05), so a checkpoint that scores a row or two below an earlier
    one is not worse on that evidence; it has trained longer, and on BANKING77 the eval score was still rising at
    the last epoch while a strict maximum kept the one before it (README, Training). Early stopping is separate
    (student/trainer.py, `ScorePatience`): it waits for a higher score, not one within the error."""
    best_score, best_error = max([*earlier, (score, error)], key=lambda evaluation: evaluation[0])
    return float(len(earlier) + 1) if score >= best_score - best_error else -1.0
