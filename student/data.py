"""The student's training data: filter's rows encoded as token ids with the loss on the answer only, and the
collators that batch them (padded or packed; with the loss mix's soft targets and weights, loss.py).

Rows are read and encoded a batch at a time into a memory-mapped Arrow file (`EncodedExamples`), which the
Trainer indexes like a list: neither the rows nor their token ids are held whole in memory."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from distill.artifacts import read_batches
from distill.config import Config, StudentConfig
from distill.errors import UserError
from distill.tasks import Task
from student.distillation import first_target_ids, require_soft_targets, soft_target
from student.loss import LossMix
from student.prompts import StudentPrompter
from student.rationale import IGNORE_INDEX, RATIONALE_TASK, TASK_KEY, rationale_pairs, some_rationale_pairs

TRAIN_COLUMNS = ("id", "text", "label")  # what training reads of filter's rows (TeacherRow's columns)


def train_columns(student: StudentConfig) -> tuple[str, ...]:
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


def encode(config: Config, task: Task, tokenizer: Any, prompter: StudentPrompter, rows: list[dict]) -> list[dict]:
    encoded = encode_rows(tokenizer, task, rows, config.student.max_seq_len, prompter)
    if config.student.distill_weight:
        first_ids = first_target_ids(task, tokenizer)
        for example, row in zip(encoded, rows, strict=True):
            example["kd_ids"], example["kd_probs"] = soft_target(row, first_ids)
    return encoded


def encode_rationales(student: StudentConfig, tokenizer: Any, prompter: StudentPrompter,
                       rows: list[dict]) -> list[dict]:
    """The rationale task's examples (student/rationale.py), one per row with a rationale; no soft target."""
    extra = {TASK_KEY: RATIONALE_TASK} | ({"kd_ids": [], "kd_probs": []} if student.distill_weight else {})
    return [encode_example(tokenizer, prompt, target, student.max_seq_len) | extra
            for prompt, target in some_rationale_pairs(rows, prompter, student.rationale_prompt)]


SCRATCH_PREFIX = ".examples-"


def remove_stale_scratch(folder: Path) -> None:
    """Example files left by a killed training (their process is gone); a live process's stay."""
    import shutil

    import psutil

    for path in folder.glob(f"{SCRATCH_PREFIX}*"):
        pid = path.name.removeprefix(SCRATCH_PREFIX).split("-")[0]
        if not (pid.isdigit() and psutil.pid_exists(int(pid))):
            shutil.rmtree(path, ignore_errors=True)


class EncodedExamples:
    """Encoded examples written batch by batch to an Arrow file in `scratch` (train's own folder: on disk, where
    /tmp may be memory), then memory-mapped: a dataset the Trainer indexes (`len`, `[i]`) without holding it. The
    file goes with this object. Tokens and rationale examples are counted while writing, for the summary."""

    def __init__(self, student: StudentConfig, batches: Iterable[list[dict[str, Any]]], scratch: Path) -> None:
        import os

        import pyarrow as pa

        scratch.mkdir(parents=True, exist_ok=True)
        self._folder = tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=scratch)
        path = str(Path(self._folder.name) / "examples.arrow")
        schema = example_schema(student)
        self.tokens = self.rationales = 0
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for batch in batches:
                self.tokens += sum(len(x["input_ids"]) for x in batch)
                self.rationales += sum(x.get(TASK_KEY) == RATIONALE_TASK for x in batch)
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        self.table = pa.ipc.open_file(pa.memory_map(path)).read_all()

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        row = self.table.slice(int(index), 1).to_pylist()[0]
        return {key: value for key, value in row.items() if value is not None}  # a label example has no task


def example_schema(student: StudentConfig) -> Any:
    import pyarrow as pa

    ids = pa.list_(pa.int32())  # token ids fit: half the file of int64
    return pa.schema([("input_ids", ids), ("labels", ids)]
                     + ([("kd_ids", ids), ("kd_probs", pa.list_(pa.float64()))] if student.distill_weight else [])
                     + ([(TASK_KEY, pa.int64())] if student.rationale_weight else []))


def encode_file(config: Config, task: Task, tokenizer: Any, prompter: StudentPrompter, path: Path, scratch: Path,
                required: tuple[str, ...] = (), rationales: bool = False) -> EncodedExamples:
    """A split's examples, the label task's for every row, then (`rationales`) the rationale task's."""
    student = config.student
    _refuse_as_whole(path, student, prompter, rationales)

    def batches() -> Iterator[list[dict[str, Any]]]:
        for rows in read_batches(path, required):
            yield encode(config, task, tokenizer, prompter, rows)
        for rows in read_batches(path, required) if rationales else ():
            yield encode_rationales(student, tokenizer, prompter, rows)

    return EncodedExamples(student, batches(), scratch)


def _refuse_as_whole(path: Path, student: StudentConfig, prompter: StudentPrompter, rationales: bool) -> None:
    """What the whole file is refused for: no row with soft targets to distil, or none with a rationale. One row
    that has what is asked (or else the first batch) stands for the file."""
    if student.distill_weight:
        require_soft_targets(_first_with(path, ["top_logprobs"], lambda r: json.loads(r["top_logprobs"] or "[]")))
    if rationales:
        rationale_pairs(_first_with(path, ["text", "rationale"], lambda r: (r["rationale"] or "").strip()), prompter,
                        student.rationale_prompt)


def _first_with(path: Path, columns: list[str], has: Callable[[dict[str, Any]], Any]) -> list[dict[str, Any]]:
    first: list[dict[str, Any]] = []
    for rows in read_batches(path, tuple(columns), columns=columns):
        found = next((row for row in rows if has(row)), None)
        if found is not None:
            return [found]
        first = first or rows
    return first


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


def collator(student: StudentConfig, tokenizer: Any) -> Any:
    """Padded or packed batches, wrapped as the loss mix needs them (soft targets, each label position's weight)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return LossMix.of(student).collator(make_collator(student, pad_id), student.packing)
