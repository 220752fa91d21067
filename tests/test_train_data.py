"""Train's dataset building streams: rows are read and encoded a batch at a time into a memory-mapped file, which
holds the same examples, in the same order, as encoding the rows held whole; the whole-file refusals stay whole."""

import json
import os
from pathlib import Path

import pytest

import distill.artifacts
from distill.artifacts import write_json, write_json_list, write_rows
from distill.config import Config
from distill.errors import UserError
from distill.tasks import make_task
from helpers import DEMO_INPUTS, study_config
from student.data import encode, encode_file, encode_rationales
from student.prompts import StudentPrompter
from teacher.rows import TEACHER_COLUMNS

LABELS = ["billing", "refund", "shipping"]


class CharTokenizer:
    """One token per character: enough to encode, with no model files."""

    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}


def _config(distil: bool) -> Config:
    """Knowledge distillation, or rationales (the config allows one of the two)."""
    config = study_config("m", DEMO_INPUTS, task={"instruction": "Route.", "labels": LABELS})
    config["teacher"].update(rationale=not distil, max_tokens=96, top_logprobs=5 if distil else 0)
    config["student"].update(distill_weight=0.3) if distil else config["student"].update(rationale_weight=0.5)
    return Config.model_validate(config)


def _rows(n: int, rationale_from: int, soft_from: int) -> list[dict]:
    return [{column: None for column in TEACHER_COLUMNS} | {
        "id": f"row-{i}", "text": f"message number {i}", "label": LABELS[i % 3], "logprob": -0.2,
        "rationale": f"It says {LABELS[i % 3]}." if i >= rationale_from else None,
        "top_logprobs": json.dumps([{"token": LABELS[i % 3][:3], "logprob": -0.1}] if i >= soft_from else [])}
        for i in range(n)]


@pytest.mark.parametrize("distil", [True, False])
def test_examples_from_batches_are_the_examples_of_the_rows_held_whole(tmp_path: Path, monkeypatch,
                                                                        distil: bool) -> None:
    """Only rows past the first batches carry a rationale or soft targets: a check per batch would refuse them."""
    config, tokenizer = _config(distil), CharTokenizer()
    task = make_task(config.task)
    prompter = StudentPrompter(task, config.student)
    rows = _rows(40, rationale_from=25, soft_from=30)
    path = tmp_path / "train.parquet"
    write_rows(path, rows, TEACHER_COLUMNS)
    monkeypatch.setattr(distill.artifacts, "BATCH_ROWS", 7)
    streamed = encode_file(config, task, tokenizer, prompter, path, tmp_path, rationales=not distil)
    whole = encode(config, task, tokenizer, prompter, rows)
    if not distil:
        whole += encode_rationales(config.student, tokenizer, prompter, rows)
    assert [streamed[i] for i in range(len(streamed))] == whole
    assert streamed.rationales == (0 if distil else 15) and streamed.tokens == sum(len(x["input_ids"]) for x in whole)
    with pytest.raises(IndexError):
        streamed[len(streamed)]


def test_a_file_without_rationales_or_soft_targets_is_refused_whole(tmp_path: Path) -> None:
    tokenizer = CharTokenizer()
    config = _config(distil=False)
    task = make_task(config.task)
    write_rows(tmp_path / "none.parquet", _rows(10, rationale_from=10, soft_from=0), TEACHER_COLUMNS)
    with pytest.raises(UserError, match="no training row has a rationale"):
        encode_file(config, task, tokenizer, StudentPrompter(task, config.student), tmp_path / "none.parquet",
                    tmp_path, rationales=True)
    config = _config(distil=True)
    write_rows(tmp_path / "soft.parquet", _rows(10, rationale_from=0, soft_from=10), TEACHER_COLUMNS)
    with pytest.raises(UserError, match="none of the teacher's answers carries log-probabilities"):
        encode_file(config, task, tokenizer, StudentPrompter(task, config.student), tmp_path / "soft.parquet",
                    tmp_path)


@pytest.mark.parametrize("items", [[], ["inputs:0"], ["inputs:0", "inputs:1", "caf\u00e9 \"q\""]])
def test_a_json_list_written_item_by_item_is_the_json_written_whole(tmp_path: Path, items: list) -> None:
    write_json(tmp_path / "whole.json", items)
    write_json_list(tmp_path / "items.json", iter(items))
    assert (tmp_path / "items.json").read_bytes() == (tmp_path / "whole.json").read_bytes()


def test_a_killed_trainings_example_files_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    import subprocess
    import sys

    from student.data import SCRATCH_PREFIX, remove_stale_scratch

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{SCRATCH_PREFIX}{dead.stdout.strip()}-abc"
    live = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-def"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "examples.arrow").write_bytes(b"x")
    remove_stale_scratch(tmp_path)
    assert not stale.exists() and live.exists()
