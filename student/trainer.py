"""`StudentTrainer`: the transformers Trainer of the student, named once (the way TRL writes its trainers).

It adds two things to the stock Trainer: a loss weighted per label position where the collator says so (the
hard-label loss mixed with the teacher's soft targets by `distill_weight`, and the rationale task beside the
label task, student/rationale.py), and every evaluation scored by the task's own metric on generated answers, so
that score reaches the log, early stopping (`ScorePatience`) and the kept checkpoint (student/evaluate.py's
`selection`) like any built-in metric.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from distill.artifacts import write_json
from distill.tasks import Task
from student import distributed
from student.distillation import SOFT_KEYS, soft_target_loss
from student.evaluate import ERROR_KEY, SCORE_KEY, SELECTION_KEY, generate_answers, selection, task_score
from student.rationale import WEIGHT_KEY, TaskWeightCollator, weighted_answer_loss


@dataclass(frozen=True)
class TaskEval:
    """What an evaluation generates and scores: prompts of the eval split and the teacher's answers to them."""

    task: Task
    tokenizer: Any
    prompts: list[str]
    references: list[str]
    max_new_tokens: int
    batch_size: int


class StudentTrainer(Trainer):
    def __init__(self, *args: Any, task_eval: TaskEval | None = None, distill_weight: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task_eval = task_eval
        self.distill_weight = distill_weight
        if isinstance(self.data_collator, TaskWeightCollator):
            self.loss_is_scaled_for_ga = False  # the weighted loss is a mean over one batch's answer tokens

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if WEIGHT_KEY not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**{key: value for key, value in inputs.items()
                           if key not in (WEIGHT_KEY, "labels", *SOFT_KEYS)})  # no labels: the loss is ours
        # The label task's weight is 1 - distill_weight (the collator's), the rationale task's rationale_weight.
        loss = weighted_answer_loss(outputs.logits, inputs["labels"], inputs[WEIGHT_KEY])
        if self.distill_weight:
            loss = loss + self.distill_weight * soft_target_loss(outputs.logits, inputs)
        return (loss, outputs) if return_outputs else loss

    def evaluation_loop(self, *args: Any, metric_key_prefix: str = "eval", **kwargs: Any) -> Any:
        output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        if self.task_eval is None:
            return output
        spec = self.task_eval
        scores = None
        if self.is_world_process_zero():  # in several processes, rank 0 scores and the others take its numbers,
            answers = generate_answers(self.model, spec.tokenizer, spec.prompts, spec.max_new_tokens, spec.batch_size)
            scores = task_score(spec.task, answers, spec.references)
        scores = distributed.from_rank_zero(scores)  # so every rank's early stopping and best checkpoint agree
        for key, value in scores.items():
            output.metrics[f"{metric_key_prefix}_{key}"] = value
        # The evaluations before this one, from the log a resumed run restores with its checkpoint.
        earlier = [(e[f"eval_{SCORE_KEY}"], e.get(f"eval_{ERROR_KEY}", 0.0)) for e in self.state.log_history
                   if f"eval_{SCORE_KEY}" in e]
        output.metrics[f"{metric_key_prefix}_{SELECTION_KEY}"] = selection(earlier, scores[SCORE_KEY],
                                                                            scores[ERROR_KEY])
        return output


class ScorePatience(TrainerCallback):
    """Stops training after `patience` evaluations in a row without a higher task score than the best before.

    Read from the log, which a resumed run restores with its checkpoint, so a resume counts the evaluations before
    it. (transformers' EarlyStoppingCallback watches the metric that keeps a checkpoint; that one prefers the
    latest checkpoint within noise of the best, which would let a plateau run on to the last epoch.)"""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        scores = [e[f"eval_{SCORE_KEY}"] for e in state.log_history if f"eval_{SCORE_KEY}" in e]
        best_at = max(range(len(scores)), key=lambda i: (scores[i], -i), default=0)  # the first of equal bests
        if len(scores) - 1 - best_at >= self.patience:
            control.should_training_stop = True


class AttemptClock(TrainerCallback):
    """Records, beside each checkpoint, the training seconds spent so far across attempts, so a resumed run's
    cost counts the attempts before it (up to their last checkpoint: later work was lost with the kill)."""

    FILE = "seconds.json"

    def __init__(self, folder: Path, earlier: float) -> None:
        self.folder, self.earlier, self.started = folder, earlier, time.monotonic()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            total = self.earlier + time.monotonic() - self.started
            write_json(Path(args.output_dir) / f"checkpoint-{state.global_step}" / self.FILE, {"seconds": total})
