"""The train stage (`distill train`): reads `filter/train.parquet` and `eval.parquet`, writes `train/adapter/`,
`merged/`, `curves.json`/`.png` and `trained_ids.json`.

LoRA fine-tuning of the student on the kept teacher labels, loss on the answer only."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from distill import cost as costs
from distill.artifacts import finite, read_rows, write_bytes, write_json
from distill.config import Config, StudentConfig
from distill.errors import UserError
from distill.layout import RunLayout, TrainFiles
from distill.models import resolve_model
from distill.stages import Manifest, Stage, StageRecorder, main_process, read_manifest
from distill.tasks import Task, make_task
from distill.tracking import prepare_trackers
from student import distributed
from student.card import write_model_cards
from student.curves import curves, plot_curves, still_rising
from student.distillation import SoftTargetCollator, first_target_ids, require_soft_targets, soft_target
from student.evaluate import SCORE_KEY, SELECTION_KEY
from student.prompts import StudentPrompter
from student.rationale import (
    IGNORE_INDEX,
    RATIONALE_TASK,
    TASK_KEY,
    TaskWeightCollator,
    rationale_examples,
    rationale_pairs,
)

log = logging.getLogger(__name__)
TRAIN_COLUMNS = ("id", "text", "label")  # what training reads of filter's rows (TeacherRow's columns)


def _train_columns(student: StudentConfig) -> tuple[str, ...]:
    """The columns this training reads: the options add the teacher's top-k and its rationale."""
    return (TRAIN_COLUMNS + (("top_logprobs", "logprob") if student.distill_weight else ())
            + (("rationale",) if student.rationale_weight else ()))


def encode_example(tokenizer: Any, prompt: str, answer: str, max_len: int) -> dict[str, list[int]]:
    """Token ids and labels for one example; labels are IGNORE_INDEX everywhere but the answer and EOS.

    The prompt is tokenized exactly as vLLM tokenizes a completion prompt (special tokens added), and a long
    prompt loses its start rather than the answer.
    """
    prompt_ids = tokenizer(prompt)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    room = max_len - len(answer_ids)
    if room <= 0:
        raise UserError(f"student.max_seq_len={max_len} leaves no room for the prompt of answer {answer!r}")
    prompt_ids = prompt_ids[-room:]
    return {"input_ids": prompt_ids + answer_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}


def encode_rows(tokenizer: Any, task: Task, rows: list[dict], max_len: int, prompter: Any = None) -> list[dict]:
    prompter = prompter or task.student_prompt
    return [encode_example(tokenizer, prompter(r["text"]), task.student_target(r["label"]), max_len) for r in rows]


class PadCollator:
    """Right-pads a batch; padded positions are masked out of attention and loss."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(x["input_ids"]) for x in batch)
        ids, labels, mask = [], [], []
        for x in batch:
            pad = width - len(x["input_ids"])
            ids.append(x["input_ids"] + [self.pad_id] * pad)
            labels.append(x["labels"] + [IGNORE_INDEX] * pad)
            mask.append([1] * len(x["input_ids"]) + [0] * pad)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask)}


def make_collator(student: StudentConfig, pad_id: int) -> Any:
    """Packed batches where asked: a batch's examples are laid end to end in one row with position ids that
    restart at each example, which transformers turns into a block-diagonal mask, so no example attends to
    another and no compute goes to padding. Otherwise right-padded batches."""
    if student.packing:
        from transformers import DataCollatorWithFlattening

        return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)
    return PadCollator(pad_id)


def load_student(student: StudentConfig) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(student.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.eos_token_id is None:
        raise UserError(f"{student.model}: the tokenizer has no EOS token; the student cannot learn to stop")
    if tokenizer.pad_token is None:  # Llama and Mistral tokenizers have none; batched generation needs one
        tokenizer.pad_token = tokenizer.eos_token
    options: dict[str, Any] = {"dtype": getattr(torch, student.dtype)}
    if student.quantization == "4bit":
        options["quantization_config"] = _four_bit_config(student)
    model = AutoModelForCausalLM.from_pretrained(path, **options)
    if student.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # Training needs no KV cache, and with one transformers skips the packed-sequence mask: packed examples
    # would silently attend to each other.
    model.config.use_cache = False
    return tokenizer, model


def _four_bit_config(student: StudentConfig) -> Any:
    import importlib.util

    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("student.quantization: 4bit (QLoRA) needs a CUDA GPU and bitsandbytes "
                        "(pip install bitsandbytes); on this machine use quantization: none")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def add_lora(model: Any, student: StudentConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = student.lora
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, use_dora=lora.use_dora,
                        target_modules=lora.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _training_args(student: StudentConfig, output_dir: Path, n_rows: int, evaluate: bool,
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


def _resume_point(folder: Path, fingerprint: dict[str, Any], trainer: Any) -> tuple[str | None, float]:
    """The checkpoint to resume from (or None) and the training seconds the attempts before it spent."""
    from student.trainer import AttemptClock

    resume = _checkpoint_to_resume(folder, fingerprint)
    recorded = Path(resume) / AttemptClock.FILE if resume else None
    earlier = json.loads(recorded.read_text())["seconds"] if recorded and recorded.is_file() else 0.0
    trainer.add_callback(AttemptClock(folder, earlier))
    return resume, earlier


def _checkpoint_to_resume(folder: Path, fingerprint: dict[str, Any]) -> str | None:
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


def _encode(config: Config, task: Task, tokenizer: Any, prompter: StudentPrompter, rows: list[dict]) -> list[dict]:
    encoded = encode_rows(tokenizer, task, rows, config.student.max_seq_len, prompter)
    if config.student.distill_weight:
        require_soft_targets(rows)
        first_ids = first_target_ids(task, tokenizer)
        for example, row in zip(encoded, rows, strict=True):
            example["kd_ids"], example["kd_probs"] = soft_target(row, first_ids)
    return encoded


def _encode_rationales(student: StudentConfig, tokenizer: Any, prompter: StudentPrompter,
                       rows: list[dict]) -> list[dict]:
    """The rationale task's examples (student/rationale.py), one per row with a rationale; no soft target."""
    extra = {TASK_KEY: RATIONALE_TASK} | ({"kd_ids": [], "kd_probs": []} if student.distill_weight else {})
    return [encode_example(tokenizer, prompt, target, student.max_seq_len) | extra
            for prompt, target in rationale_pairs(rows, prompter, student.rationale_prompt)]


def _collator(student: StudentConfig, tokenizer: Any) -> Any:
    """Padded or packed batches; with knowledge distillation, the teacher's soft targets; with it or the rationale
    task, each label position's weight in the loss."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collator = make_collator(student, pad_id)
    if student.distill_weight:
        collator = SoftTargetCollator(collator, packed=student.packing)
    if student.distill_weight or student.rationale_weight:
        collator = TaskWeightCollator(collator, student.packing, 1 - student.distill_weight, student.rationale_weight)
    return collator


def _make_trainer(config: Config, task: Task, tokenizer: Any, model: Any, prompter: StudentPrompter,
                  train_rows: list[dict], eval_rows: list[dict], output_dir: Path) -> Any:
    from distill.console.training import use_console
    from student.trainer import ScorePatience, StudentTrainer, TaskEval

    student = config.student
    train_data = _encode(config, task, tokenizer, prompter, train_rows)
    if student.rationale_weight:  # the second task trains only: evaluation asks for the label
        train_data += _encode_rationales(student, tokenizer, prompter, train_rows)
    eval_data = _encode(config, task, tokenizer, prompter, eval_rows)
    task_eval = None
    if eval_data:
        scored = eval_rows[:student.eval_max_rows]
        task_eval = TaskEval(task, tokenizer, [prompter(r["text"]) for r in scored], [r["label"] for r in scored],
                             task.answer_token_budget(student.max_tokens), student.batch_size)
    patience = student.early_stopping_patience
    callbacks = [ScorePatience(patience)] if eval_data and patience else []
    args = _training_args(student, output_dir, len(train_data), bool(eval_data), list(config.tracking.report_to))
    trainer = StudentTrainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data or None,
                             data_collator=_collator(student, tokenizer), callbacks=callbacks, task_eval=task_eval,
                             distill_weight=student.distill_weight)
    use_console(trainer, f"eval_{SCORE_KEY}", task.quality_name)
    return trainer


def train(config: Config, layout: RunLayout) -> Manifest:
    """Train a LoRA adapter on `filter/train.parquet`, keeping the checkpoint with the best task metric on
    `filter/eval.parquet`; write `train/adapter/` (PEFT format), `curves.json` and `curves.png` and, if asked,
    `train/merged/`. A killed run resumes from its last checkpoint."""
    from transformers import set_seed

    read_manifest(layout, "filter")
    distributed.start()  # several processes (`--devices N`, torchrun, accelerate launch): one DDP group
    files = layout.train
    recorder = StageRecorder(STAGE, config, layout)
    remove_outputs(files)
    task, student = make_task(config.task), config.student
    train_rows, eval_rows = read_rows(layout.filter.train, _train_columns(student)), read_rows(layout.filter.eval)
    tokenizer, model = load_student(student)
    set_seed(student.seed)  # the adapter's initial weights come from the global RNG: seed it first
    model = add_lora(model, student)
    check_servable(model)
    prepare_trackers(config, layout)
    trainer = _make_trainer(config, task, tokenizer, model, StudentPrompter(task, student, tokenizer), train_rows,
                            eval_rows, files.checkpoints)
    resume, earlier_seconds = _resume_point(files.checkpoints, {"key": recorder.key}, trainer)
    with recorder.timed("train"):
        result = trainer.train(resume_from_checkpoint=resume)
    if not trainer.is_world_process_zero():
        return distributed.from_rank_zero(None)  # rank 0 writes the outputs; every rank returns its manifest
    best_step = _save_outputs(config, task, trainer, model, tokenizer, files, recorder)
    write_json(files.trained_ids, [r["id"] for r in train_rows])
    shutil.rmtree(files.checkpoints)  # the adapter is the kept checkpoint
    counts = {"train_rows": len(train_rows), "eval_rows": len(eval_rows), "steps": result.global_step,
              "rationale_examples": rationale_examples(trainer.train_dataset)}
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
    tokens = sum(len(x["input_ids"]) for x in trainer.train_dataset) * epochs
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


def check_servable(model: Any) -> None:
    """The config refuses what vLLM cannot load; a target_modules pattern can still reach an embedding or the
    output head of this architecture, which only the loaded model shows. Refuse that before any training."""
    from distill.config import EMBEDDING_MODULES

    config = model.peft_config["default"]
    reached = [name for name in model.targeted_module_names if name.rsplit(".", 1)[-1] in EMBEDDING_MODULES]
    if reached or config.modules_to_save:
        raise UserError(f"student.lora.target_modules reaches {reached or config.modules_to_save}, which vLLM "
                        "cannot serve as LoRA; list only linear layers (e.g. q_proj, v_proj) or use all-linear")


def _best_step(state: Any) -> int | None:
    if state.best_model_checkpoint is None:
        return None
    return int(Path(state.best_model_checkpoint).name.rsplit("-", 1)[1])


def save_merged(model: Any, tokenizer: Any, out: Path) -> None:
    """Fold the adapter into the base weights and save a plain checkpoint that vLLM serves without LoRA."""
    merged = model.merge_and_unload()
    merged.config.use_cache = True  # for inference
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)


STAGE = Stage("train", train, reads=("task", "student", "compare.student_serving"),
              consumes=("filter",), produces=("adapter/", "trained_ids.json"),
              fingerprint=lambda config: config.teacher.model if config.student.distill_weight else None,
              cost=costs.train_cost, keeps_outputs=True)
