"""The train stage (`distill train`): reads `filter/train.parquet` and `eval.parquet`, writes `train/adapter/`,
`merged/`, `curves.json`/`.png` and `trained_ids.json`.

LoRA fine-tuning of the student on the kept teacher labels, loss on the answer only. The parts: data.py (the
encoded rows and their batches), model.py (loading, LoRA, merging), loss.py (the loss mix), trainer.py (the
Trainer, its arguments, resuming)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from itertools import islice
from pathlib import Path
from typing import Any

from distill import cost as costs
from distill.artifacts import count_rows, finite, read_batches, write_bytes, write_json, write_json_list
from distill.config import Config
from distill.layout import RunLayout, TrainFiles
from distill.models import resolve_model
from distill.stages import Manifest, Stage, StageRecorder, main_process, read_manifest
from distill.tasks import Task, make_task
from distill.tracking import prepare_trackers
from student import distributed
from student.card import write_model_cards
from student.curves import curves, plot_curves, still_rising
from student.data import collator, encode_file, remove_stale_scratch, train_columns
from student.evaluate import SCORE_KEY
from student.model import add_lora, check_servable, load_student, save_merged
from student.prompts import StudentPrompter

log = logging.getLogger(__name__)


def _make_trainer(config: Config, task: Task, tokenizer: Any, model: Any, prompter: StudentPrompter,
                  layout: RunLayout) -> Any:
    from distill.console.training import use_console
    from student.loss import LossMix
    from student.trainer import ScorePatience, StudentTrainer, TaskEval, training_args

    student, splits = config.student, layout.filter
    # The rationale task trains only: evaluation asks for the label.
    scratch = layout.train.folder
    remove_stale_scratch(scratch)
    train_data = encode_file(config, task, tokenizer, prompter, splits.train, scratch, train_columns(student),
                             rationales=bool(student.rationale_weight))
    eval_data = encode_file(config, task, tokenizer, prompter, splits.eval, scratch)
    task_eval = None
    if eval_data:
        scored = list(islice((row for rows in read_batches(splits.eval) for row in rows), student.eval_max_rows))
        task_eval = TaskEval(task, tokenizer, [prompter(r["text"]) for r in scored], [r["label"] for r in scored],
                             task.answer_token_budget(student.max_tokens), student.batch_size)
    patience = student.early_stopping_patience
    callbacks = [ScorePatience(patience)] if eval_data and patience else []
    args = training_args(student, layout.train.checkpoints, len(train_data), bool(eval_data),
                         list(config.tracking.report_to))
    trainer = StudentTrainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data or None,
                             data_collator=collator(student, tokenizer), callbacks=callbacks, task_eval=task_eval,
                             loss_mix=LossMix.of(student))
    use_console(trainer, f"eval_{SCORE_KEY}", task.quality_name)
    return trainer


def train(config: Config, layout: RunLayout) -> Manifest:
    """Train a LoRA adapter on `filter/train.parquet`, keeping the checkpoint with the best task metric on
    `filter/eval.parquet`; write `train/adapter/` (PEFT format), `curves.json` and `curves.png` and, if asked,
    `train/merged/`. A killed run resumes from its last checkpoint."""
    from student.trainer import resume_point

    read_manifest(layout, "filter")
    distributed.start()  # several processes (`--devices N`, torchrun, accelerate launch): one DDP group
    files, recorder = layout.train, StageRecorder(STAGE, config, layout)
    remove_outputs(files)
    task, student = make_task(config.task), config.student
    tokenizer, model = load_student(student)
    model = add_lora(model, student)
    check_servable(model)
    prepare_trackers(config, layout)
    trainer = _make_trainer(config, task, tokenizer, model, StudentPrompter(task, student, tokenizer), layout)
    resume, earlier_seconds = resume_point(files.checkpoints, {"key": recorder.key}, trainer)
    with recorder.timed("train"):
        result = trainer.train(resume_from_checkpoint=resume)
    if not trainer.is_world_process_zero():
        return distributed.from_rank_zero(None)  # rank 0 writes the outputs; every rank returns its manifest
    best_step = _save_outputs(config, task, trainer, model, tokenizer, files, recorder)
    write_json_list(files.trained_ids, (row["id"] for rows in read_batches(layout.filter.train, columns=["id"])
                                        for row in rows))
    shutil.rmtree(files.checkpoints)  # the adapter is the kept checkpoint
    counts = {"train_rows": count_rows(layout.filter.train), "eval_rows": count_rows(layout.filter.eval),
              "steps": result.global_step, "rationale_examples": trainer.train_dataset.rationales}
    summary = _training_summary(config, trainer, result, files, best_step, recorder.timings["train"])
    write_model_cards(config, layout, counts | summary)
    return distributed.from_rank_zero(recorder.finish(
        outputs=[p for p in (files.adapter, files.merged, files.curves_json, files.curves_png, files.trained_ids)
                 if p.exists()],
        counts=counts, **summary, resumed_from=Path(resume).name if resume else None,
        train_seconds_total=round(earlier_seconds + time.time() - recorder.started, 3),
        processes=distributed.world_size(),
    ))


def remove_outputs(files: TrainFiles) -> None:
    """Remove what an earlier training left (checkpoints aside, which a resumed run continues from): an old
    `merged/` after a retrain with export_merged: false would otherwise be hashed as this student's and measured."""
    if not main_process():
        return
    for path in (files.adapter, files.merged, files.curves_json, files.curves_png, files.trained_ids):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _training_summary(config: Config, trainer: Any, result: Any, files: TrainFiles, best_step: int | None,
                      seconds: float) -> dict[str, Any]:
    history = json.loads(files.curves_json.read_text())
    # Epochs as trained, not as asked: early stopping ends a run before student.epochs.
    epochs = trainer.state.epoch or config.student.epochs
    tokens = trainer.train_dataset.tokens * epochs
    rising = still_rising(history)
    if rising:
        log.warning("the task score on the eval split was still rising at the last evaluation (the kept "
                    "checkpoint is the last one): more epochs may help (student.epochs)")
    return {
        "still_rising": rising,
        "train_loss": finite(result.training_loss),
        "eval_loss": history["eval"][-1]["loss"] if history["eval"] else None,
        "best_step": best_step,
        "best_eval_task_score": next((p[SCORE_KEY] for p in history["eval"] if p["step"] == best_step), None),
        "tokens_per_s": round(tokens / seconds, 1),
        "base_model": resolve_model(config.student.model),
        "lora_rank": config.student.lora.r,
    }


def _save_outputs(config: Config, task: Task, trainer: Any, model: Any, tokenizer: Any, files: TrainFiles,
                  recorder: StageRecorder) -> int | None:
    """The adapter, the merged copy where asked, and the training curves; returns the kept step."""
    model.save_pretrained(files.adapter)
    if config.student.export_merged or config.compare.student_serving == "merged":
        with recorder.timed("merge"):
            save_merged(model, tokenizer, files.merged)
    history = curves(trainer.state.log_history)
    best_step = _best_step(trainer.state)
    write_json(files.curves_json, history)
    write_bytes(files.curves_png, plot_curves(history, task.quality_name, best_step))
    return best_step


def _best_step(state: Any) -> int | None:
    if state.best_model_checkpoint is None:
        return None
    return int(Path(state.best_model_checkpoint).name.rsplit("-", 1)[1])


STAGE = Stage("train", train, reads=("task", "student", "compare.student_serving"),
              consumes=("filter",), produces=("adapter/", "trained_ids.json"),
              fingerprint=lambda config: config.teacher.model if config.student.distill_weight else None,
              cost=costs.train_cost, keeps_outputs=True)
