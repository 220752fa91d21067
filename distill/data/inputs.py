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
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from distill.config import Config, DataConfig
from distill.data.readers import DataError, RowProblems, Table, iter_rows, read_table, where
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
    missing = _missing_columns(path, table, data)
    if missing:
        return [], missing, table
    problems = RowProblems()
    examples = [e for index, row in enumerate(table.rows)
                if (e := _example(path, data, canonical_gold, row, index, table.lines[index], problems)) is not None]
    examples = _with_ids(path, table, data, examples, problems)
    return examples, problems.lines(), table


def _example(path: Path, data: DataConfig, canonical_gold: Callable[[str], str], row: dict[str, Any], index: int,
             line: int | None, problems: RowProblems) -> Example | None:
    """One row as an example (its id still to give), or None with the problem found in it."""
    text = row.get(data.text_column)
    if not isinstance(text, str) or not text.strip():
        problems.add(path, where(index, line), f"column {data.text_column!r}: empty or missing text; fix or remove "
                     "that row")
        return None
    raw = gold_text(row.get(data.gold_column)) if data.gold_column else None
    try:
        gold = canonical_gold(raw) if raw is not None else None
    except ValueError as exc:
        problems.add(path, where(index, line), f"column {data.gold_column!r}: gold answer {raw[:80]!r} is not valid "
                     f"for the task: {exc}; fix it, or leave data.gold_column out")
        return None
    return Example(id="", text=text.strip(), gold=gold, row=index + 1)


def _missing_columns(path: Path, table: Table, data: DataConfig) -> list[str]:
    columns = list(dict.fromkeys(key for row in table.rows[:1000] for key in row))
    return _absent(path, data, len(table.rows), columns, {key for row in table.rows for key in row})


def _absent(path: Path, data: DataConfig, rows: int, first_columns: list[str], every_column: set[str]) -> list[str]:
    """The columns the config names that no row has (`first_columns`: those of the first rows, for the message)."""
    if not rows:
        return [f"{path}: no rows (an empty file, or a header alone); give it a header and at least one row"]
    keys = (("data.text_column", data.text_column), ("data.gold_column", data.gold_column),
            ("data.id_column", data.id_column))
    return [f"{path}: no column {column!r} ({key}); the file has columns {first_columns}"
            for key, column in keys if column is not None and column not in every_column]


def _with_ids(path: Path, table: Table, data: DataConfig, examples: list[Example], problems: RowProblems
              ) -> list[Example]:
    if data.id_column is None:
        return [Example(i, e.text, e.gold, e.row) for i, e in zip(content_ids([e.text for e in examples]), examples,
                                                                 strict=True)]
    first_row: dict[str, int] = {}
    named = []
    for example in examples:
        value = gold_text(table.rows[example.row - 1].get(data.id_column))
        problem = id_problem(value, data.id_column, example.row, first_row)
        if problem:
            problems.add(path, table.where(example.row - 1), problem)
        else:
            named.append(Example(value, example.text, example.gold, example.row))
    return named


def id_problem(value: str | None, column: str, row: int, first_row: dict[str, int]) -> str | None:
    """What is wrong with a row's `data.id_column` value (empty, or an earlier row's), else None; `first_row`
    remembers each id's row."""
    if value is None:
        return f"column {column!r}: empty id (data.id_column); give every row an id"
    if value in first_row:
        return f"column {column!r}: id {value[:40]!r} repeats row {first_row[value]}; ids must be unique"
    first_row[value] = row
    return None


def load_examples(path: Path, data: DataConfig, canonical_gold: Callable[[str], str] = str) -> list[Example]:
    """The file's examples; a `DataError` lists every problem in it at once."""
    examples, problems, _ = read_examples(path, data, canonical_gold)
    if problems:
        raise DataError(problems)
    return examples


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


def overlap_problem(data: DataConfig, inputs: Iterable[str], test: Iterable[str]) -> tuple[str | None, int]:
    """An error where `data.test` and `data.inputs` hold the same queries (every test query among the inputs, or
    every input among the test queries): each such input would be labelled, paid for, then dropped as a leak.
    Also the number of inputs that repeat a test query (filter drops those as leaks_test)."""
    test_texts = {normalise(text) for text in test}
    inputs_seen = repeated = 0
    found: set[str] = set()
    for text in inputs:
        key = normalise(text)
        inputs_seen += 1
        if key in test_texts:
            repeated += 1
            found.add(key)
    wholly = repeated and (found == test_texts or repeated == inputs_seen)
    if not wholly or data.allow_test_in_inputs:
        return None, repeated
    return (f"{data.test} (data.test) and {data.inputs} (data.inputs) hold the same queries ({repeated} of "
            f"{inputs_seen} inputs repeat a test query): every one would be labelled and then dropped as a leak. "
            "Give a held-out test file, or leave data.test out to hold rows out of the inputs (data.test_size); "
            "data.allow_test_in_inputs: true accepts it"), repeated


class _Strings:
    """Strings (or None) kept as one UTF-8 buffer and their end offsets: a million short texts cost their own
    bytes and 8 more each, not a Python object each."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ends = array("q")  # ~end where the value is None

    def append(self, value: str | None) -> None:
        if value is not None:
            self.data += value.encode()
        self.ends.append(len(self.data) if value is not None else ~len(self.data))

    def __getitem__(self, index: int) -> str | None:
        end = self.ends[index]
        if end < 0:
            return None
        start = self.ends[index - 1] if index else 0
        return self.data[~start if start < 0 else start:end].decode()


def _occurrences(keys: Any, order: Any) -> Any:
    """For each place in `order`, which occurrence of its text the row is (1 for the first in file order): a
    repeated text's n-th occurrence gets ".n" in its id, and repeats sit side by side in the order. Compared a
    block at a time, so no copy of every key is made."""
    import numpy as np

    occurrence = np.ones(len(order), dtype=np.int32)
    for start in range(1, len(order), 65536):
        stop = min(start + 65536, len(order))
        for place in np.flatnonzero(keys[order[start:stop]] == keys[order[start - 1:stop - 1]]) + start:
            occurrence[place] = occurrence[place - 1] + 1
    return occurrence


class ShuffledFile:
    """One data file's examples in the split's seeded order, read in one streaming pass: per row only its text,
    gold and id (where `data.id_column` names one) are kept, compactly; an `Example` is made when asked for."""

    def __init__(self, path: Path, data: DataConfig, canonical_gold: Callable[[str], str]) -> None:
        self.texts = _Strings()
        self.golds = _Strings() if data.gold_column is not None else None
        self.named = _Strings() if data.id_column is not None else None
        digests = self._read(path, data, canonical_gold)
        # A seeded pseudo-random order that is stable as a file grows: each row's place comes from a hash of its
        # own text, so appended rows slot in without reshuffling the old ones (which keep their split). Ties (the
        # same text) keep file order.
        import numpy as np

        keys = np.frombuffer(digests, dtype="S32")
        self.order = np.argsort(keys, kind="stable")
        self.occurrence = _occurrences(keys, self.order)

    def _read(self, path: Path, data: DataConfig, canonical_gold: Callable[[str], str]) -> bytearray:
        problems = RowProblems()
        digests, first_row, first_columns, every_column = bytearray(), {}, {}, set()
        rows = 0
        for index, (row, line) in enumerate(iter_rows(path, data.format, data.header, data.quoting)):
            rows += 1
            if index < 1000:
                first_columns.update(dict.fromkeys(row))
            every_column.update(row)  # set.update of keys already present costs little
            example = _example(path, data, canonical_gold, row, index, line, problems)
            if example is None:
                continue
            if self.named is not None:
                self._named_id(path, data, row, index, line, first_row, problems)
            digests += hashlib.sha256(f"{data.seed}:{example.text}".encode()).digest()
            self.texts.append(example.text)
            if self.golds is not None:
                self.golds.append(example.gold)
        absent = _absent(path, data, rows, list(first_columns), every_column)
        if absent or problems.lines():
            raise DataError(absent or problems.lines())
        return digests

    def _named_id(self, path: Path, data: DataConfig, row: dict[str, Any], index: int, line: int | None,
                  first_row: dict[str, int], problems: RowProblems) -> None:
        value = gold_text(row.get(data.id_column))
        problem = id_problem(value, data.id_column, index + 1, first_row)  # type: ignore[arg-type]
        if problem:
            problems.add(path, where(index, line), problem)
        assert self.named is not None
        self.named.append(value)

    def __len__(self) -> int:
        return len(self.order)

    def all_texts(self) -> Iterator[str]:
        """Every row's text, in file order."""
        return (text for i in range(len(self.order)) if (text := self.texts[i]) is not None)

    def examples(self, start: int, stop: int) -> list[Example]:
        """The examples from `start` to `stop` in the shuffled order."""
        return [self._make(position, index) for position, index in
                zip(range(start, stop), self.order[start:stop].tolist(), strict=True)]

    def example(self, position: int) -> Example:
        """The example at `position` in the shuffled order."""
        return self._make(position, int(self.order[position]))

    def _make(self, position: int, index: int) -> Example:
        text = self.texts[index]
        assert text is not None
        if self.named is not None:
            row_id = self.named[index]
        else:
            n = int(self.occurrence[position])
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            row_id = digest if n == 1 else f"{digest}.{n}"
        gold = self.golds[index] if self.golds is not None else None
        return Example(id=row_id or "", text=text, gold=gold, row=index + 1)


class Rows(Sequence[Example]):
    """A run of a `ShuffledFile`'s order, as a sequence whose examples are made when read."""

    def __init__(self, source: ShuffledFile, start: int, stop: int) -> None:
        self.source, self.start, self.stop = source, start, max(start, stop)

    def __len__(self) -> int:
        return self.stop - self.start

    @overload
    def __getitem__(self, index: int) -> Example: ...

    @overload
    def __getitem__(self, index: slice) -> list[Example]: ...

    def __getitem__(self, index: int | slice) -> Example | list[Example]:
        positions = range(self.start, self.stop)
        if isinstance(index, slice):
            chosen = positions[index]
            if chosen.step == 1:
                return self.source.examples(chosen.start, chosen.stop)
            return [self.source.example(p) for p in chosen]
        return self.source.example(positions[index])

    def __iter__(self) -> Iterator[Example]:
        return (self.source.example(p) for p in range(self.start, self.stop))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: Sequence[Example]) -> list[Example]:
        return [*self, *other]

    def __radd__(self, other: Sequence[Example]) -> list[Example]:
        return [*other, *self]


@dataclass(frozen=True)
class Splits:
    to_label: Rows
    test: Rows


def split_inputs(config: Config) -> Splits:
    """Rows for the teacher to label and held-out test queries; the same config always gives the same split.

    Inputs are shuffled before truncation because real files are often sorted by label. Rows appended to a
    file later never pull an old row into the test split, so labels already paid for stay usable. The files are
    read a row at a time and the chosen rows' examples made as they are used, so memory holds little more than
    the texts themselves however many rows there are.
    """
    data = config.data
    canonical_gold = make_task(config.task).parse_gold
    inputs = ShuffledFile(data.inputs, data, canonical_gold)
    test = ShuffledFile(data.test, data, canonical_gold) if data.test is not None else None
    problems = size_problems(data, len(inputs), None if test is None else len(test))
    if test is not None:
        problems += [p for p in overlap_problem(data, inputs.all_texts(), test.all_texts())[:1] if p]
    if problems:
        raise UserError("\n".join(problems))
    first = 0 if test is not None else data.test_size
    last = len(inputs) if data.max_inputs is None else min(len(inputs), first + data.max_inputs)
    held_out = Rows(test, 0, len(test)) if test is not None else Rows(inputs, 0, data.test_size)
    if data.max_test is not None:
        held_out = Rows(held_out.source, 0, min(len(held_out), data.max_test))
    return Splits(to_label=Rows(inputs, first, last), test=held_out)
