"""Knowledge distillation from the teacher's soft labels: at the answer's first token, where generate kept the
teacher's top-k log-probabilities, the student is also trained towards that distribution.

Loss = (1 - w) * cross-entropy on the teacher's answer + w * cross-entropy against the teacher's top-k,
renormalised (equal to their KL divergence up to a constant).

The mapping goes through the labels, so teacher and student need not share a tokenizer. Each teacher token is
text that starts one or more labels ("top" starts seven BANKING77 labels); its probability goes to those labels.
The label the teacher answered is known, and so is the probability of its whole token sequence (the answer's
log-probability): it gets that probability, through the tokens that start it, and what is left of those tokens'
mass is shared evenly by the other labels they start. Where the answer's probability is unknown, the answered
label keeps its first token's whole share. (Shared evenly, a teacher 100% sure of `topping_up_by_card` gave it
0.14.) A token that starts only other labels is shared evenly between them: nothing says which one it meant.
Each label's probability then goes to the first token of that label as the student is trained to write it, in
the student's own tokenizer (" cancellation" may be one token there, and " cancel" another: mapping the teacher's
token itself would pick the wrong one). Tokens that start no label are left out before renormalising.
Single-label classification only: a JSON or free-text answer's first token (`{`, `[`, a word) says nothing about
the answer.
"""

from __future__ import annotations

import json
import math
from typing import Any

from distill.errors import UserError
from distill.tasks import Task


def label_probabilities(alternatives: list[dict[str, Any]], labels: list[str], answered: str | None = None,
                        answer_logprob: float | None = None) -> dict[str, float]:
    """The teacher's probability per label from its first-token alternatives and, where known, the label it
    answered with the log-probability of that whole answer."""
    mass: dict[str, float] = {}
    # The answered label's own probability, handed out once, through the likeliest tokens that start it first.
    owed = math.exp(answer_logprob) if answer_logprob is not None else math.inf
    for alternative in sorted(alternatives, key=lambda a: -a["logprob"]):
        token = alternative["token"].lstrip()  # a leading space is where the token sits, not what it says
        started = [label for label in labels if token and label.startswith(token)]
        probability = math.exp(alternative["logprob"])
        if answered in started:
            others = [label for label in started if label != answered]
            own = min(probability, owed) if others else probability
            owed = max(owed - own, 0.0)
            _add(mass, [answered], own)
            _add(mass, others, probability - own)
        else:
            _add(mass, started, probability)
    if answered in labels and answered not in mass and math.isfinite(owed):
        mass[answered] = owed  # its first token fell outside the top-k
    return mass


def _add(mass: dict[str, float], labels: list[str], probability: float) -> None:
    for label in labels:
        mass[label] = mass.get(label, 0.0) + probability / len(labels)


def first_target_ids(task: Task, tokenizer: Any) -> dict[str, int]:
    """Each label's first token id as the student is trained to write it (the task's student target)."""
    assert task.labels is not None and task.single_label, "distillation is refused for other tasks by the config"
    return {label: tokenizer(task.student_target(label), add_special_tokens=False)["input_ids"][0]
            for label in task.labels}


def require_soft_targets(rows: list[dict[str, Any]]) -> None:
    """Refuse label-level distillation on answers that carry no log-probabilities (recorded answers, or
    teacher.top_logprobs off): it would train on hard labels while the run and its card say it distilled."""
    if rows and not any(json.loads(row.get("top_logprobs") or "[]") for row in rows):
        raise UserError("student.distill_weight: none of the teacher's answers carries log-probabilities (recorded "
                        "answers, or teacher.top_logprobs off), so there is no soft target to learn; set "
                        "student.distill_weight: 0, or label with a live teacher and teacher.top_logprobs")


def soft_target(row: dict[str, Any], first_ids: dict[str, int]) -> tuple[list[int], list[float]]:
    """Student token ids and the teacher's renormalised probabilities for them; empty where none were kept or
    none of the teacher's tokens starts a label."""
    labels = label_probabilities(json.loads(row.get("top_logprobs") or "[]"), list(first_ids), row.get("label"),
                                 row.get("logprob"))
    mass: dict[int, float] = {}
    for label, probability in labels.items():
        mass[first_ids[label]] = mass.get(first_ids[label], 0.0) + probability  # labels sharing a first token
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
