"""Knowledge distillation from the teacher's soft labels: at the answer's first token, where generate kept the
teacher's top-k log-probabilities, the student is also trained towards that distribution.

Loss = (1 - w) * cross-entropy on the teacher's answer + w * cross-entropy against the teacher's top-k,
renormalised (equal to their KL divergence up to a constant). The teacher's alternatives are token strings of
its own tokenizer; they become student token ids by tokenizing them the way the student's target starts (a
label follows "Label:" after a space), which is only faithful when both models share one tokenizer.
"""

from __future__ import annotations

import json
import math
from typing import Any

from distill.config import Config
from distill.errors import UserError
from distill.tasks import Task


def check_shared_tokenizer(config: Config, student_tokenizer: Any) -> None:
    from teacher.tokens import load_teacher_tokenizer

    teacher_tokenizer = load_teacher_tokenizer(config)
    if teacher_tokenizer is None:
        raise UserError(f"student.distill_weight: the teacher's tokenizer ({config.teacher.model}) is not available "
                        "locally, so its soft labels cannot be matched to the student's tokens; set "
                        "teacher.model to a local folder or catalogue name, or distill_weight: 0")
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise UserError(f"student.distill_weight: teacher {config.teacher.model} and student {config.student.model} "
                        "have different tokenizers, so the teacher's token probabilities do not apply to the "
                        "student; use a student of the teacher's family, or distill_weight: 0")


def soft_target(row: dict[str, Any], task: Task, tokenizer: Any) -> tuple[list[int], list[float]]:
    """Student token ids and the teacher's renormalised probabilities for them; empty where none were kept."""
    alternatives = json.loads(row.get("top_logprobs") or "[]")
    prefix = task.student_target("")
    mass: dict[int, float] = {}
    for alternative in alternatives:
        ids = tokenizer(prefix + alternative["token"], add_special_tokens=False)["input_ids"]
        if ids:
            mass[ids[0]] = mass.get(ids[0], 0.0) + math.exp(alternative["logprob"])
    total = sum(mass.values())
    if total <= 0:
        return [], []
    return list(mass), [p / total for p in mass.values()]


SOFT_KEYS = ("kd_rows", "kd_columns", "kd_ids", "kd_probs")  # what the collator adds to a batch


class SoftTargetCollator:
    """Wraps a collator (packed or padded) and adds, per example, where its first answer token is predicted
    and the teacher's soft target there."""

    def __init__(self, inner: Any, packed: bool) -> None:
        self.inner = inner
        self.packed = packed

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        out = self.inner([{k: x[k] for k in ("input_ids", "labels")} for x in batch])
        width = max((len(x["kd_ids"]) for x in batch), default=0) or 1
        rows, columns, ids, probs = [], [], [], []
        offset = 0
        for index, x in enumerate(batch):
            first_answer = next(i for i, label in enumerate(x["labels"]) if label != -100)  # -100: not answer
            rows.append(0 if self.packed else index)
            columns.append(offset + first_answer - 1)  # the logits one position earlier predict that token
            offset += len(x["input_ids"]) if self.packed else 0
            pad = width - len(x["kd_ids"])
            ids.append(x["kd_ids"] + [0] * pad)
            probs.append(x["kd_probs"] + [0.0] * pad)
        out["kd_rows"], out["kd_columns"] = torch.tensor(rows), torch.tensor(columns)
        out["kd_ids"], out["kd_probs"] = torch.tensor(ids), torch.tensor(probs)
        return out


def soft_target_loss(logits: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy of the student's first-answer-token distribution against the teacher's, over the
    examples that have a soft target."""
    import torch

    log_probs = torch.log_softmax(logits[batch["kd_rows"], batch["kd_columns"]].float(), dim=-1)
    per_example = -(batch["kd_probs"] * log_probs.gather(-1, batch["kd_ids"])).sum(-1)
    has_target = batch["kd_probs"].sum(-1) > 0
    if not has_target.any():
        return logits.new_zeros(())
    return per_example[has_target].mean()
