"""The student's loss, written once:

    loss = (1 - distill_weight) * L_label + distill_weight * L_soft + rationale_weight * L_rationale

L_label is the cross-entropy on the teacher's answer (the hard label), L_soft the cross-entropy against the
teacher's top-k at the answer's first token (the soft label, distillation.py), L_rationale the cross-entropy on
the teacher's rationale behind its own prompt (rationale.py); each term is a mean over its own tokens (or
examples) in the batch. With both weights 0 the loss is the model's own, and no weights travel with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.config import StudentConfig
from student.distillation import SoftTargetCollator, soft_target_loss
from student.rationale import WEIGHT_KEY, TaskWeightCollator, weighted_answer_loss


@dataclass(frozen=True)
class LossMix:
    distill_weight: float = 0.0
    rationale_weight: float = 0.0

    @classmethod
    def of(cls, student: StudentConfig) -> LossMix:
        return cls(student.distill_weight, student.rationale_weight)

    @property
    def weighted(self) -> bool:
        return bool(self.distill_weight or self.rationale_weight)

    def collator(self, inner: Any, packed: bool) -> Any:
        """Wraps a padded or packed collator: the soft targets where distilling, and each label position's weight
        in the loss (its task's weight over that task's answer tokens in the batch) where the mix is weighted."""
        if self.distill_weight:
            inner = SoftTargetCollator(inner, packed=packed)
        if self.weighted:
            inner = TaskWeightCollator(inner, packed, 1 - self.distill_weight, self.rationale_weight)
        return inner

    def loss(self, logits: Any, batch: dict[str, Any]) -> Any:
        """The mix on a batch from `collator` (it carries the label and rationale weights per position)."""
        loss = weighted_answer_loss(logits, batch["labels"], batch[WEIGHT_KEY])
        if self.distill_weight:
            loss = loss + self.distill_weight * soft_target_loss(logits, batch)
        return loss
