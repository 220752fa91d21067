"""`distill validate`: every data file a config names, read and checked the way the stages will read it, with
no model loaded, so a malformed file surfaces in seconds rather than hours into a run.

Problems (each naming file, row and column) make the config invalid and are all reported at once; notes are
things worth a look that the pipeline handles (test rows repeated in the inputs, which filter drops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distill.config import Config
from distill.data.inputs import Example, normalise, overlap_problem, read_examples, size_problems
from distill.data.lengths import cut_note, load_tokenizer, sequence_lengths
from distill.data.readers import DataError
from distill.errors import UserError
from distill.tasks import make_task


@dataclass
class DataReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # examples read per file

    def summary(self) -> str:
        return "; ".join(f"{Path(path).name}: {n:,} rows" for path, n in self.rows.items())


def check_data(config: Config) -> DataReport:
    """Read `data.inputs` and `data.test`, check columns, ids and gold answers against the task, the row counts
    the config asks for, and test rows repeated in the inputs."""
    report = DataReport()
    try:
        canonical_gold = make_task(config.task).parse_gold
    except UserError as exc:  # a side file (labels, schema) that changed since the config was loaded
        report.problems.append(str(exc))
        return report
    files = {"inputs": config.data.inputs, "test": config.data.test}
    examples = {name: _read(path, config, canonical_gold, report) for name, path in files.items() if path}
    inputs, test = examples.get("inputs"), examples.get("test")
    if inputs is not None and (test is not None or config.data.test is None):
        report.problems += size_problems(config.data, len(inputs), None if test is None else len(test))
    if inputs and test:
        _overlap(config, inputs, test, report)
    if inputs:
        _lengths(config, inputs, report)
    return report


LENGTH_ROWS = 20_000  # rows whose student-token length validate counts (a few seconds)


def _lengths(config: Config, inputs: list[Example], report: DataReport) -> None:
    """A note where training would cut inputs at student.max_seq_len (their gold answers stand in for labels)."""
    tokenizer = load_tokenizer(config.student.model)
    if tokenizer is None:
        return
    rows = inputs[:LENGTH_ROWS]
    lengths = sequence_lengths(make_task(config.task), config.student, [e.text for e in rows],
                               [e.gold for e in rows], tokenizer)
    note = cut_note(str(config.data.inputs), lengths, config.student.max_seq_len)
    if note is not None:
        report.notes.append(note)


def _read(path: Path, config: Config, canonical_gold: object, report: DataReport) -> list[Example] | None:
    try:
        examples, problems, table = read_examples(path, config.data, canonical_gold)  # type: ignore[arg-type]
    except DataError as exc:
        report.problems += exc.problems
        return None
    except (UserError, OSError) as exc:
        report.problems.append(str(exc))
        return None
    report.problems += problems
    report.notes += table.notes
    report.rows[str(path)] = len(examples)
    if config.data.gold_column and examples and all(e.gold is None for e in examples):
        report.notes.append(f"{path}: column {config.data.gold_column!r} (data.gold_column) is empty in every "
                            "row: nothing will be scored against gold")
    return None if problems else examples


def _overlap(config: Config, inputs: list[Example], test: list[Example], report: DataReport) -> None:
    problem, repeated = overlap_problem(config.data, (e.text for e in inputs), (e.text for e in test))
    if problem:
        report.problems.append(problem)
    elif repeated:
        test_texts = {normalise(e.text) for e in test}
        first = next(e.row for e in inputs if normalise(e.text) in test_texts)
        report.notes.append(f"{config.data.inputs}: {repeated} row(s) repeat a test query (first: row {first}); "
                            "filter drops them as leaks_test, so they are labelled but never trained on")
