"""Input rows identified by their content, and the one deterministic split into rows to label and held-out test
queries.

A row's id is a hash of its text (or the value of a user-named `data.id_column`), never its position, so a
rolling window over a data source, or a row inserted at the top, leaves every other row's id as it was: new-row
counting (`student.retrain_min_new_rows`), the splits and `train/trained_ids.json` all follow the content.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.config import Config, DataConfig
from distill.data.readers import DataError, Table, read_table
from distill.errors import UserError
from distill.tasks import make_task


@dataclass(frozen=True)
class Example:
    id: str  # data.id_column's value, else a hash of the text; a repeated text gets ".2", ".3"... in file order
    text: str
    gold: str | None
    row: int = 0  # 1-based row in its file, for messages


def content_ids(texts: list[str]) -> list[str]:
    """An id per text from its content. Exact repeats stay distinct rows (the filter drops them as duplicates,
    and a test file may hold them on purpose): the n-th occurrence of a text gets the suffix ".n"."""
    seen: Counter[str] = Counter()
    ids = []
    for text in texts:
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        seen[digest] += 1
        ids.append(digest if seen[digest] == 1 else f"{digest}.{seen[digest]}")
    return ids


def normalise(text: str) -> str:
    """A text with case and runs of whitespace ignored: what counts as "the same text" (duplicates, leaks)."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def gold_text(value: Any) -> str | None:
    """A gold cell as the task parses it: text as it is, any JSON value (an object, a list, a number) as JSON,
    never Python's `str()` of it; an empty cell means the row has no gold."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    return json.dumps(value, ensure_ascii=False, default=str)


def read_examples(path: Path, data: DataConfig, canonical_gold: Callable[[str], str] = str
                  ) -> tuple[list[Example], list[str], Table]:
    """The file's examples, every problem found in it (each naming file, row and column), and the table read."""
    table = read_table(path, data.format, data.header, data.quoting)
    problems = _missing_columns(path, table, data)
    if problems:
        return [], problems, table
    examples = []
    for index, row in enumerate(table.rows):
        where = f"{path}: {table.where(index)}"
        text = row.get(data.text_column)
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}, column {data.text_column!r}: empty or missing text; fix or remove that row")
            continue
        raw = gold_text(row.get(data.gold_column)) if data.gold_column else None
        try:
            gold = canonical_gold(raw) if raw is not None else None
        except ValueError as exc:
            problems.append(f"{where}, column {data.gold_column!r}: gold answer {raw[:80]!r} is not valid for the "
                            f"task: {exc}; fix it, or leave data.gold_column out")
            continue
        examples.append(Example(id="", text=text.strip(), gold=gold, row=index + 1))
    examples = _with_ids(path, table, data, examples, problems)
    return examples, problems, table


def _missing_columns(path: Path, table: Table, data: DataConfig) -> list[str]:
    if not table.rows:
        return [f"{path}: no rows"]
    columns = list(dict.fromkeys(key for row in table.rows[:1000] for key in row))
    keys = (("data.text_column", data.text_column), ("data.gold_column", data.gold_column),
            ("data.id_column", data.id_column))
    return [f"{path}: no column {column!r} ({key}); the file has columns {columns}"
            for key, column in keys if column is not None and all(column not in row for row in table.rows)]


def _with_ids(path: Path, table: Table, data: DataConfig, examples: list[Example], problems: list[str]
              ) -> list[Example]:
    if data.id_column is None:
        return [Example(i, e.text, e.gold, e.row) for i, e in zip(content_ids([e.text for e in examples]), examples,
                                                                 strict=True)]
    first_row: dict[str, int] = {}
    named = []
    for example in examples:
        value = gold_text(table.rows[example.row - 1].get(data.id_column))
        where = f"{path}: {table.where(example.row - 1)}, column {data.id_column!r}"
        if value is None:
            problems.append(f"{where}: empty id (data.id_column); give every row an id")
        elif value in first_row:
            problems.append(f"{where}: id {value[:40]!r} repeats row {first_row[value]}; ids must be unique")
        else:
            first_row[value] = example.row
            named.append(Example(value, example.text, example.gold, example.row))
    return named


def load_examples(path: Path, data: DataConfig, canonical_gold: Callable[[str], str] = str) -> list[Example]:
    """The file's examples; a `DataError` lists every problem in it at once."""
    examples, problems, _ = read_examples(path, data, canonical_gold)
    if problems:
        raise DataError(problems)
    return examples


def _shuffled(examples: list[Example], seed: int) -> list[Example]:
    """A seeded pseudo-random order that is stable as a file grows: each row's place comes from a hash of its
    own text, so appended rows slot in without reshuffling the old ones (which keep their split)."""
    return sorted(examples, key=lambda e: hashlib.sha256(f"{seed}:{e.text}".encode()).digest())


def size_problems(data: DataConfig, input_rows: int, test_rows: int | None) -> list[str]:
    """Row counts the config asks for that the files do not have. `max_test` beyond the test rows is an error,
    not a silent cut: every report quotes the test size, and it must be the one the config says."""
    if data.test is None:
        if input_rows <= data.test_size:
            return [f"{data.inputs}: {input_rows} rows cannot spare data.test_size={data.test_size} test rows; "
                    "lower data.test_size or give data.test"]
        test_rows, source = data.test_size, f"data.test_size={data.test_size} rows held out of {data.inputs}"
    else:
        source = f"{data.test} has {test_rows} rows"
    if data.max_test is not None and test_rows is not None and data.max_test > test_rows:
        return [f"data.max_test={data.max_test}, but {source}: lower data.max_test, or leave it out to compare "
                "on every test row"]
    return []


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
    inputs = _shuffled(load_examples(data.inputs, data, canonical_gold), data.seed)
    test = _shuffled(load_examples(data.test, data, canonical_gold), data.seed) if data.test is not None else None
    problems = size_problems(data, len(inputs), None if test is None else len(test))
    if problems:
        raise UserError("\n".join(problems))
    if test is None:
        test, inputs = inputs[: data.test_size], inputs[data.test_size :]
    return Splits(to_label=inputs[: data.max_inputs], test=test[: data.max_test])
