"""Rationale distillation (Distilling Step-by-Step, Hsieh et al. 2023): beside each label, the student is trained
to write the teacher's rationale for it (kept by generate with `teacher.rationale: true`), as a second task behind
a prompt of its own (`student.rationale_prompt`). Evaluation, compare and serving ask with the label prompt only.

Loss = L_label + w * L_rationale (w = `student.rationale_weight`), each term the mean over its own task's answer
tokens in the batch. A plain mean over a mixed batch's tokens would let a 60-token rationale outweigh a 3-token
label twenty times; this way the label term is exactly the plain loss, whatever the rationales' length. The
weights travel per token from the collator, for packed and padded batches alike, and with knowledge distillation
the label term's weight is 1 - `distill_weight` as before.
"""

from __future__ import annotations

from typing import Any

from distill.errors import UserError

IGNORE_INDEX = -100  # label value the cross-entropy loss skips
TASK_KEY = "task"  # which task an encoded example trains; absent: the label task
LABEL_TASK, RATIONALE_TASK = 0, 1
WEIGHT_KEY = "loss_weights"  # what the collator adds to a batch: each label position's weight in the loss


def rationale_pairs(rows: list[dict[str, Any]], prompter: Any, template: str) -> list[tuple[str, str]]:
    """(prompt, target) of the rationale task for each row that has a rationale; refused where rows have none."""
    pairs = some_rationale_pairs(rows, prompter, template)
    if rows and not pairs:
        raise UserError("student.rationale_weight > 0, but no training row has a rationale: generate the labels with "
                        "teacher.rationale: true (then rerun filter and train), or set student.rationale_weight: 0")
    return pairs


def some_rationale_pairs(rows: list[dict[str, Any]], prompter: Any, template: str) -> list[tuple[str, str]]:
    """The pairs of the rows that have a rationale, however few (one batch of many); the target starts with a
    space, as a label does after its prompt."""
    return [(prompter.wrap(template.format(text=row["text"])), " " + row["rationale"].strip())
            for row in rows if (row.get("rationale") or "").strip()]


class TaskWeightCollator:
    """Wraps a collator (packed or padded) and adds each label position's weight: its task's weight divided by
    that task's answer tokens in the batch (0 for positions out of the loss)."""

    def __init__(self, inner: Any, packed: bool, label_weight: float, rationale_weight: float) -> None:
        self.inner = inner
        self.packed = packed
        self.weights = {LABEL_TASK: label_weight, RATIONALE_TASK: rationale_weight}

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        out = self.inner([{key: value for key, value in x.items() if key != TASK_KEY} for x in batch])
        labels = out["labels"]
        tasks = [[x.get(TASK_KEY, LABEL_TASK)] * len(x["input_ids"]) for x in batch]
        if self.packed:  # one row, the examples end to end
            task_ids = torch.tensor([[task for example in tasks for task in example]])
        else:  # one row per example, right-padded (-1: no task)
            task_ids = torch.tensor([example + [-1] * (labels.shape[1] - len(example)) for example in tasks])
        # The collated labels, not the examples': packing masks each example's first position as a separator.
        answer = labels != IGNORE_INDEX
        weights = torch.zeros(labels.shape, dtype=torch.float32)
        for task, weight in self.weights.items():
            tokens = answer & (task_ids == task)
            if tokens.any():
                weights[tokens] = weight / tokens.sum()
        out[WEIGHT_KEY] = weights
        return out


def weighted_answer_loss(logits: Any, labels: Any, weights: Any) -> Any:
    """Sum of weight x cross-entropy over the label positions; the logits at a position predict the next token,
    as in the models' own loss."""
    import torch

    vocab = logits.size(-1)
    per_token = torch.nn.functional.cross_entropy(
        logits[..., :-1, :].float().reshape(-1, vocab), labels[..., 1:].reshape(-1), ignore_index=IGNORE_INDEX,
        reduction="none")
    return (per_token * weights[..., 1:].reshape(-1).to(per_token.device)).sum()
