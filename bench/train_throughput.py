"""Train-stage throughput against a plain transformers Trainer with padded batches: same model, data, steps.

    .venv/bin/python bench/train_throughput.py     # SmolLM2-135M, LoRA r=16, 24 steps of 16 BANKING77 examples

On a GPU both sides train in bf16 autocast and the JSON adds each side's peak GPU memory; `--model` takes a
model folder. Tokens/s counts real (non-padding) tokens only, so both sides are credited for the same work.
Baseline first, then the stage, in one process; the last line is JSON with `ratio` (stage tokens/s over baseline
tokens/s) and the peak resident memory of each run (measured in a child process each, so the two do not mix).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BANKING = REPO.parent / "shared" / "data" / "banking77"


def examples(n: int) -> list[dict]:
    source = BANKING / "train.csv" if BANKING.exists() else REPO / "configs" / "data" / "support_inbox.csv"
    with open(source, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows = [rows[(i * 7919) % len(rows)] for i in range(n)]  # spread over the (label-sorted) file
    return [{"id": f"inputs:{i}", "text": r["text"], "label": r["category"]} for i, r in enumerate(rows)]


def make_config(model: str, labels: list[str], folder: Path):
    from distill.config import Config

    inputs = folder / "inputs.csv"
    inputs.write_text("text\nunused\n")
    return Config.model_validate({
        "name": "bench",
        "task": {"instruction": "Classify.", "labels": labels, "student_prompt": "{text}\nIntent:"},
        "data": {"inputs": str(inputs), "test": str(inputs)},
        "teacher": {"model": model},
        "student": {"model": model, "epochs": 1, "batch_size": 16, "max_seq_len": 128, "export_merged": False},
        "cost": {"teacher_price_per_hour": 1, "student_price_per_hour": 1, "train_price_per_hour": 1},
    })


def run_baseline(model: str, rows: list[dict], queue: multiprocessing.Queue) -> None:
    """The plain way: transformers Trainer, DataCollatorForSeq2Seq padding each batch to its longest row."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from distill.config import StudentConfig
    from distill.models import resolve_model
    from student.data import encode_example
    from student.model import add_lora

    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = [encode_example(tokenizer, f"{r['text']}\nIntent:", f" {r['label']}", 128) for r in rows]
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    peft_model = add_lora(base, StudentConfig(model=model))
    gpu = torch.cuda.is_available()  # on a GPU the plain way is bf16 autocast too
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=16, num_train_epochs=1,
                             learning_rate=3e-4, save_strategy="no", report_to=[], use_cpu=not gpu, bf16=gpu,
                             remove_unused_columns=False, disable_tqdm=True, seed=0)
    trainer = Trainer(model=peft_model, args=args, train_dataset=data,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = sum(len(x["input_ids"]) for x in data)
    queue.put({"tokens_per_s": tokens / seconds, "seconds": seconds,
               **peak_memory()})


def run_stage(model: str, rows: list[dict], queue: multiprocessing.Queue) -> None:
    from distill.artifacts import write_json, write_rows
    from distill.layout import RunLayout
    from student.train import train

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_rows(folder / "filter" / "train.parquet", rows)
        write_rows(folder / "filter" / "eval.parquet", rows[:1])
        write_json(folder / "filter" / "manifest.json", {"stage": "filter"})
        config = make_config(model, sorted({r["label"] for r in rows}), folder)
        manifest = train(config, RunLayout(folder))
    queue.put({"tokens_per_s": manifest["tokens_per_s"], "seconds": manifest["timings"]["train"],
               **peak_memory()})


def peak_memory() -> dict:
    """Peak resident memory of this process, and of the GPU where training ran on one."""
    import torch

    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "gpu_peak_memory_mb": gpu}


def in_child(target, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args()
    rows = examples(16 * args.steps)
    baseline = in_child(run_baseline, args.model, rows)
    stage = in_child(run_stage, args.model, rows)
    print(json.dumps({
        "ratio": round(stage["tokens_per_s"] / baseline["tokens_per_s"], 3),
        "stage_tokens_per_s": round(stage["tokens_per_s"], 1),
        "baseline_tokens_per_s": round(baseline["tokens_per_s"], 1),
        "stage_peak_memory_mb": round(stage["peak_memory_mb"]),
        "baseline_peak_memory_mb": round(baseline["peak_memory_mb"]),
        "stage_gpu_peak_memory_mb": stage["gpu_peak_memory_mb"] and round(stage["gpu_peak_memory_mb"]),
        "baseline_gpu_peak_memory_mb": baseline["gpu_peak_memory_mb"] and round(baseline["gpu_peak_memory_mb"]),
        "steps": args.steps, "batch_size": 16, "model": args.model,
    }))


if __name__ == "__main__":
    main()
