"""`StudentTrainer`: the transformers Trainer of the student, named once (the way TRL writes its trainers).

It adds two things to the stock Trainer: the loss mix (loss.py: the hard-label loss mixed with the teacher's soft
targets by `distill_weight`, and the rationale task beside the label task) where the collator weighs each label
position, and every evaluation scored by the task's own metric on generated answers, so
that score reaches the log, early stopping (`ScorePatience`) and the kept checkpoint (student/evaluate.py's
`selection`) like any built-in metric.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from distill.artifacts import write_json
from distill.config import StudentConfig
from distill.tasks import Task
from student import distributed
from student.distillation import SOFT_KEYS
from student.evaluate import ERROR_KEY, SCORE_KEY, SELECTION_KEY, generate_answers, selection, task_score
from student.loss import LossMix
from student.rationale import WEIGHT_KEY


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
    def __init__(self, *args: Any, task_eval: TaskEval | None = None, loss_mix: LossMix | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task_eval = task_eval
        self.loss_mix = loss_mix or LossMix()
        if self.loss_mix.weighted:
            self.loss_is_scaled_for_ga = False  # the weighted loss is a mean over one batch's answer tokens

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if WEIGHT_KEY not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**{key: value for key, value in inputs.items()
                           if key not in (WEIGHT_KEY, "labels", *SOFT_KEYS)})  # no labels: the loss is ours
        loss = self.loss_mix.loss(outputs.logits, inputs)
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


def training_args(student: StudentConfig, output_dir: Path, n_rows: int, evaluate: bool,
                   report_to: list[str] | None = None) -> Any:
    import torch
    from transformers import TrainingArguments

    # student.batch_size is one optimiser step's batch, split over the processes (student/distributed.py), so
    # steps per epoch, and the evaluation cadence, are the same for any number of them.
    steps_per_epoch = math.ceil(n_rows / student.batch_size)
    every = max(1, steps_per_epoch // student.evals_per_epoch)
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=student.epochs,
        per_device_train_batch_size=distributed.per_device_batch(student.batch_size),
        per_device_eval_batch_size=distributed.per_device_batch(student.batch_size),
        average_tokens_across_devices=True,  # the loss of a step is over all its tokens, as in one process
        learning_rate=student.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps_per_epoch // 10),
        logging_steps=max(1, steps_per_epoch // 4),
        # A checkpoint at every evaluation: the best one is kept, and a killed run resumes from the last.
        eval_strategy="steps" if evaluate else "no",
        eval_steps=every,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=2,
        load_best_model_at_end=evaluate,
        metric_for_best_model=f"eval_{SELECTION_KEY}" if evaluate else None,
        greater_is_better=True,
        report_to=report_to or [],  # tracking.report_to: the training curves to those trackers
        seed=student.seed,
        data_seed=student.seed,
        # Weights stay in `student.dtype`; matrix products run in bfloat16 under autocast (2.35x with packing
        # over a padded float32 Trainer on this CPU, bench/train_throughput.py).
        bf16=student.mixed_precision == "bf16" and student.dtype == "float32",
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        disable_tqdm=True,  # distill's console shows progress (ConsoleCallback), for a terminal or a log file
    )


def resume_point(folder: Path, fingerprint: dict[str, Any], trainer: Any) -> tuple[str | None, float]:
    """The checkpoint to resume from (or None) and the training seconds the attempts before it spent."""
    resume = checkpoint_to_resume(folder, fingerprint)
    recorded = Path(resume) / AttemptClock.FILE if resume else None
    earlier = json.loads(recorded.read_text())["seconds"] if recorded and recorded.is_file() else 0.0
    trainer.add_callback(AttemptClock(folder, earlier))
    return resume, earlier


def checkpoint_to_resume(folder: Path, fingerprint: dict[str, Any]) -> str | None:
    """The last complete checkpoint of an interrupted run of this same training; checkpoints of any other are
    removed. The Trainer writes `trainer_state.json` last, so a checkpoint without one was cut short by the kill."""
    marker = folder / "fingerprint.json"
    if distributed.rank() == 0:  # one process tidies; the others wait for it, then all read the same folder
        if folder.is_dir() and (not marker.exists() or json.loads(marker.read_text()) != fingerprint):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(marker, fingerprint)
    distributed.barrier()
    complete = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(complete, key=lambda p: int(p.name.rsplit("-", 1)[1]))) if complete else None
