"""Reading input rows, and the one deterministic split into rows to label and held-out test queries."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distill.config import Config, DataConfig
from distill.data import readers
from distill.errors import UserError
from distill.tasks import make_task


@dataclass(frozen=True)
class Example:
    id: str  # "<source>:<row>", stable across runs so outputs can be joined back to their input
    text: str
    gold: str | None


def read_table(path: Path, data_format: str = "auto", header: list[str] | None = None) -> list[dict]:
    """Rows of a CSV/TSV, JSON Lines, JSON list or Parquet file (by suffix unless `data_format` says), as dicts."""
    kind = path.suffix.lower().lstrip(".") if data_format == "auto" else data_format
    try:
        if kind in ("csv", "tsv"):
            with open(path, encoding="utf-8", newline="") as handle:
                return list(csv.DictReader(handle, fieldnames=header, delimiter="\t" if kind == "tsv" else ","))
        if kind == "jsonl":
            with open(path, encoding="utf-8") as handle:
                return [_json_line(path, n, line) for n, line in enumerate(handle, 1) if line.strip()]
        if kind == "json":
            rows = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(rows, list):
                raise UserError(f"{path}: a .json input must hold a list of objects")
            return rows
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if kind == "restaurant8k":
            return readers.restaurant8k(path)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); re-save the file as UTF-8") from exc
    raise UserError(f"{path}: unsupported file type {kind!r}; use .csv, .tsv, .jsonl, .json or .parquet, "
                    "or name the format in data.format")


def _json_line(path: Path, line_number: int, line: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {line_number}: not valid JSON ({exc.msg})") from exc


def load_examples(path: Path, data: DataConfig, source: str, canonical_gold: Callable[[str], str] = str
                  ) -> list[Example]:
    rows = read_table(path, data.format, data.header)
    if not rows:
        raise UserError(f"{path}: no rows")
    columns = list(rows[0].keys())
    for key, column in (("data.text_column", data.text_column), ("data.gold_column", data.gold_column)):
        if column is not None and column not in columns:
            raise UserError(f"{path}: no column {column!r} ({key}); the file has columns {columns}")
    examples = []
    for index, row in enumerate(rows):
        text = row.get(data.text_column)
        if not isinstance(text, str) or not text.strip():
            raise UserError(
                f"{path}: row {index + 1}: empty or missing {data.text_column!r}; fix or remove that row"
            )
        gold = row.get(data.gold_column) if data.gold_column else None
        has_gold = gold is not None and str(gold).strip() != ""  # an empty cell: this row has no gold
        examples.append(Example(id=f"{source}:{index}", text=text.strip(),
                                gold=_gold(path, index, str(gold), canonical_gold) if has_gold else None))
    return examples


def _gold(path: Path, index: int, raw: str, canonical: Callable[[str], str]) -> str:
    try:
        return canonical(raw)
    except ValueError as exc:
        raise UserError(f"{path}: row {index + 1}: gold answer {raw[:80]!r} is not valid for the task: {exc}; "
                        "fix it, or leave data.gold_column out") from exc


def _shuffled(examples: list[Example], seed: int) -> list[Example]:
    """A seeded pseudo-random order that is stable as a file grows: each row's place comes from a hash of its
    own text, so appended rows slot in without reshuffling the old ones (which keep their split)."""
    return sorted(examples, key=lambda e: hashlib.sha256(f"{seed}:{e.text}".encode()).digest())


@dataclass(frozen=True)
class Splits:
    to_label: list[Example]
    test: list[Example]


def split_inputs(config: Config) -> Splits:
    """Rows for the teacher to label and held-out test queries; the same config always gives the same split.

    Inputs are shuffled before truncation because real files are often sorted by label. Rows appended to a
    file later never pull an old row into the test split, so labels already paid for stay usable.
    """
    data = config.data
    canonical_gold = make_task(config.task).parse_gold
    inputs = _shuffled(load_examples(data.inputs, data, "inputs", canonical_gold), data.seed)
    if data.test is not None:
        test = _shuffled(load_examples(data.test, data, "test", canonical_gold), data.seed)
    else:
        if len(inputs) <= data.test_size:
            raise UserError(
                f"{data.inputs}: {len(inputs)} rows cannot spare data.test_size={data.test_size} test rows; "
                "lower data.test_size or give data.test"
            )
        test, inputs = inputs[: data.test_size], inputs[data.test_size :]
    return Splits(to_label=inputs[: data.max_inputs], test=test[: data.max_test])
