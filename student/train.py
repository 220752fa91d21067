"""The train stage: LoRA fine-tuning of the student on the kept teacher labels, loss on the answer only."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from distill.artifacts import StageRecorder, read_manifest, read_rows, write_json
from distill.config import Config, StudentConfig
from distill.errors import UserError
from distill.models import resolve_model
from distill.tasks import Task, make_task

IGNORE_INDEX = -100  # label value the cross-entropy loss skips
TRAINED_IDS = "trained_ids.json"


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


def encode_rows(tokenizer: Any, task: Task, rows: list[dict], max_len: int) -> list[dict]:
    return [encode_example(tokenizer, task.student_prompt(r["text"]), task.student_target(r["label"]), max_len)
            for r in rows]


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
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, student.dtype))
    # Training needs no KV cache, and with one transformers skips the packed-sequence mask: packed examples
    # would silently attend to each other.
    model.config.use_cache = False
    return tokenizer, model


def add_lora(model: Any, student: StudentConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = student.lora
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _training_args(student: StudentConfig, output_dir: Path, n_rows: int) -> Any:
    import torch
    from transformers import TrainingArguments

    steps_per_epoch = math.ceil(n_rows / student.batch_size)
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=student.epochs,
        per_device_train_batch_size=student.batch_size,
        per_device_eval_batch_size=student.batch_size,
        learning_rate=student.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps_per_epoch // 10),
        logging_steps=max(1, steps_per_epoch // 4),
        save_strategy="no",
        report_to=[],
        seed=student.seed,
        # Weights stay in `student.dtype`; matrix products run in bfloat16 under autocast (2.35x with packing
        # over a padded float32 Trainer on this CPU, bench/train_throughput.py).
        bf16=student.mixed_precision == "bf16" and student.dtype == "float32",
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        disable_tqdm=False,
    )


def train(config: Config, run_dir: Path) -> dict[str, Any]:
    """Train a LoRA adapter on `filter/train.parquet`; write `train/adapter/` (PEFT format) and, if the
    student is to be served merged, `train/merged/`."""
    from transformers import Trainer

    read_manifest(run_dir / "filter", "distill filter")
    stage_dir = run_dir / "train"
    recorder = StageRecorder(stage_dir, "train", config)
    task = make_task(config.task)
    train_rows = read_rows(run_dir / "filter" / "train.parquet")
    eval_rows = read_rows(run_dir / "filter" / "eval.parquet")
    student = config.student
    tokenizer, model = load_student(student)
    model = add_lora(model, student)
    train_data = encode_rows(tokenizer, task, train_rows, student.max_seq_len)
    eval_data = encode_rows(tokenizer, task, eval_rows, student.max_seq_len)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer = Trainer(model=model, args=_training_args(student, stage_dir / "checkpoints", len(train_data)),
                      train_dataset=train_data, eval_dataset=eval_data or None,
                      data_collator=make_collator(student, pad_id))
    with recorder.timed("train"):
        result = trainer.train()
    eval_loss = trainer.evaluate()["eval_loss"] if eval_data else None
    model.save_pretrained(stage_dir / "adapter")
    if student.export_merged or config.compare.student_serving == "merged":
        with recorder.timed("merge"):
            save_merged(model, tokenizer, stage_dir / "merged")
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    write_json(stage_dir / "history.json", history)
    write_json(stage_dir / TRAINED_IDS, [r["id"] for r in train_rows])
    tokens = sum(len(x["input_ids"]) for x in train_data) * student.epochs
    return recorder.finish(
        inputs={"train": run_dir / "filter" / "train.parquet", "eval": run_dir / "filter" / "eval.parquet"},
        outputs=[p for p in (stage_dir / "adapter", stage_dir / "merged", stage_dir / "history.json",
                             stage_dir / TRAINED_IDS) if p.exists()],
        counts={"train_rows": len(train_data), "eval_rows": len(eval_data), "steps": result.global_step},
        train_loss=result.training_loss,
        eval_loss=eval_loss,
        tokens_per_s=round(tokens / recorder.timings["train"], 1),
        base_model=resolve_model(student.model),
        lora_rank=student.lora.r,
    )


def save_merged(model: Any, tokenizer: Any, out: Path) -> None:
    """Fold the adapter into the base weights and save a plain checkpoint that vLLM serves without LoRA."""
    merged = model.merge_and_unload()
    merged.config.use_cache = True  # for inference
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
