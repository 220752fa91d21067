"""The filter stage (`distill filter`): reads `generate/outputs.parquet` and `generate/test.parquet`, writes
`filter/train.parquet`, `eval.parquet`, `dropped.parquet` and `report.json`/`report.md`.

Keep only teacher labels worth learning from, and record why every other row was dropped.

Checks run in a fixed order and the first that fails names the row's reason: truncated, invalid, too_short,
too_long, output_too_long, low_confidence, low_vote_share, ungrounded / unsupported (an answer its input does not
support: support.py), leaks_test (exact or near copy of a held-out test
query), duplicate, near_duplicate, over_label_cap; training rows beyond `filter.max_train_rows` are
over_label_budget. It reads files only: a new threshold never calls the teacher.

Rows stream through it in batches (`distill.artifacts.BATCH_ROWS`), in two passes at most: screen every row and
write the drops in input order (with a label cap, screened rows are spilled first, as the cap is known only at
the end), then read the kept rows back in the split's seeded order (order.py). Scratch files (those buckets, the
near-dup index) live in `filter/.scratch-*` and are removed when the stage ends, or at the next run after a kill.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from distill.artifacts import read_batches, read_rows, row_writer, write_json, write_text
from distill.config import Config
from distill.errors import UserError
from distill.filter import support
from distill.filter.card import card_path, dataset_card
from distill.filter.order import SeededOrder
from distill.filter.report import ReportTally
from distill.filter.screen import LabelCaps, Screen
from distill.layout import RunLayout
from distill.stages import Manifest, Stage, StageRecorder, read_manifest
from distill.tasks import Task, make_task
from teacher import fidelity
from teacher.rows import TEACHER_COLUMNS, TEST_COLUMNS

Batch = tuple[list[dict[str, Any]], list[str | None]]  # rows and their drop reasons (None: kept)


def check_contract(path: Path, task: Task) -> None:
    """Refuse, before any work, outputs without the teacher's columns or made under another label set or schema."""
    for rows in read_batches(path, TEACHER_COLUMNS, columns=["label"]):
        for value in sorted({r["label"] for r in rows if r["label"] is not None}):
            parsed = task.parse(value)
            if parsed.value != value:
                raise UserError(f"{path}: answer {value[:80]!r} is not valid under the config's task "
                                f"({parsed.error}); the outputs were made with another label set or schema: "
                                "rerun `distill generate`")


def row_schemas(path: Path) -> tuple[Any, Any]:
    """The Arrow schemas of kept and dropped rows: the teacher's columns as generate typed them, and ours."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.read_schema(path)
    # What filter adds to the teacher's rows: the parts of the answer its input does not support (support.column).
    kept = pa.schema([*(source.field(name) for name in TEACHER_COLUMNS), pa.field("grounding", pa.string())])
    return kept, kept.append(pa.field("drop_reason", pa.string()))


# What fixes the most common drop when nothing is kept: loosening the filter cannot help where the answers are bad.
_FIXES = {
    "invalid": "the teacher's answers are empty, failed or not valid (a broken server? read generate/server.log): "
               "fix the teacher and ask for them again with `distill generate -c CONFIG --retry-invalid` "
               "(same --run-dir), then rerun",
    "truncated": "the answers reached teacher.max_tokens: raise it and rerun `distill generate`",
    "leaks_test": "every input is also a test row: give `data.test` a file of other rows",
    "duplicate": "the inputs are copies of each other: give more distinct inputs or set filter.dedup_exact: false",
    "near_duplicate": "raise filter.near_dup_threshold or remove it",
}


def _nothing_kept(source: Path, drops: Counter[str | None]) -> UserError:
    reason, count = drops.most_common(1)[0]
    fix = _FIXES.get(str(reason), f"loosen the filter setting that drops {reason!r} rows in `filter`")
    return UserError(f"{source}: the filter kept no rows; most were dropped as {reason} ({count} of "
                     f"{sum(drops.values())}; drops: {dict(drops)}): {fix}")


def filter_stage(config: Config, layout: RunLayout) -> Manifest:
    """Read `generate/outputs.parquet` and the test split; write `filter/train.parquet`, `eval.parquet`,
    `dropped.parquet` and a report."""
    read_manifest(layout, "generate")
    source, files = layout.generate.outputs, layout.filter
    task = make_task(config.task)
    check_contract(source, task)
    test_texts = [row["text"] for row in read_rows(layout.generate.test, TEST_COLUMNS)]
    recorder = StageRecorder(STAGE, config, layout)
    files.folder.mkdir(parents=True, exist_ok=True)
    for stale in files.folder.glob(".scratch-*"):  # left by a killed run (the run lock keeps out a live one)
        shutil.rmtree(stale)
    for stale in files.folder.glob(".*.tmp"):  # its half-written outputs (artifacts.atomic_path)
        stale.unlink()
    tally = ReportTally(task, config)
    with recorder.timed("filters"), tempfile.TemporaryDirectory(prefix=".scratch-", dir=files.folder) as scratch:
        counts = write_splits(config, layout, Path(scratch), tally, test_texts)
    report = tally.report(counts["train"], counts["eval"], fidelity.load(layout.generate.fidelity))
    write_json(files.report_json, report)
    write_text(files.report_md, report_markdown(report))
    write_text(card_path(layout), dataset_card(config, report))  # deterministic, so hashed with the data
    return recorder.finish(outputs=[files.train, files.eval, files.dropped, files.report_json, card_path(layout)],
                           counts={k: report[k] for k in ("rows_in", "rows_kept", "train", "eval")},
                           drops=report["drops"])


def screened(screen: Screen, source: Path, scratch: Path, tally: ReportTally, dropped_schema: Any) -> Iterator[Batch]:
    """Every row with its drop reason, in input order; with a label cap, through a spill file (see the module)."""

    def first_pass() -> Iterator[Batch]:
        for rows in read_batches(source, TEACHER_COLUMNS):
            reasons, found = screen(rows)
            for row, parts in zip(rows, found, strict=True):
                row["grounding"] = support.column(parts)
            tally.see(rows, found)
            yield rows, reasons

    if screen.caps is None:
        yield from first_pass()
        return
    spill = scratch / "screened.parquet"
    with row_writer(spill, dropped_schema) as writer:
        for rows, reasons in first_pass():
            writer.write({**row, "drop_reason": reason} for row, reason in zip(rows, reasons, strict=True))
    kept, offset = screen.caps.kept(), 0
    for rows in read_batches(spill):
        reasons = [row.pop("drop_reason") for row in rows]
        LabelCaps.apply(reasons, offset, kept)
        offset += len(rows)
        yield rows, reasons


def write_splits(config: Config, layout: RunLayout, scratch: Path, tally: ReportTally,
                 test_texts: list[str]) -> dict[str, int]:
    """Write the drops in input order, then the kept rows in the seeded order: eval first, then train up to its
    budget, the rest dropped as over_label_budget. Returns the rows written to train and eval."""
    import pyarrow.parquet as pq

    source, files, rules = layout.generate.outputs, layout.filter, config.filter
    kept_schema, dropped_schema = row_schemas(source)
    order = SeededOrder(scratch, kept_schema, rules.seed, pq.ParquetFile(source).metadata.num_rows)
    with row_writer(files.dropped, dropped_schema) as dropped:
        # The near-dup index (a file in `scratch`, and its page cache) is closed once every row is screened.
        with closing(Screen(config, test_texts, scratch)) as screen:
            for rows, reasons in screened(screen, source, scratch, tally, dropped_schema):
                tally.drops.update(reason for reason in reasons if reason)
                dropped.write({**row, "drop_reason": reason}
                              for row, reason in zip(rows, reasons, strict=True) if reason)
                order.add([row for row, reason in zip(rows, reasons, strict=True) if reason is None])
        if not order.rows:
            raise _nothing_kept(source, tally.drops)
        n_eval = round(order.rows * rules.eval_fraction)
        budget = rules.max_train_rows or order.rows
        with row_writer(files.eval, kept_schema) as evaluation, row_writer(files.train, kept_schema) as train:
            for position, row in enumerate(order):
                if position < n_eval:
                    evaluation.write([row])
                    tally.keep("eval", row)
                elif position - n_eval < budget:
                    train.write([row])
                    tally.keep("train", row)
                else:
                    dropped.write([{**row, "drop_reason": "over_label_budget"}])
                    tally.drops["over_label_budget"] += 1
    return {"train": train.rows, "eval": evaluation.rows}


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Filter report", "",
        f"Rows in: {report['rows_in']}; kept: {report['rows_kept']} (train {report['train']}, eval {report['eval']}).",
        "", "| drop reason | rows |", "|---|---|",
        *[f"| {reason} | {count} |" for reason, count in report["drops"].items()],
    ]
    if report.get("placeholders"):
        lines += ["", "Placeholders (\"null\", \"N/A\"...) written as values, per field (task.placeholders: "
                  "left out or invalid): " + ", ".join(f"{k} {v}" for k, v in report["placeholders"].items()) + "."]
    lines += fidelity.markdown(report.get("constraint_fidelity"))
    lines += support.markdown(report.get("grounding"), (report.get("audit") or {}).get("quality_name", "quality"))
    if report["labels_before"]:
        lines += ["", "| label (or filled field) | before | after |", "|---|---|---|",
                  *[f"| {label} | {count} | {report['labels_after'].get(label, 0)} |"
                    for label, count in report["labels_before"].items()]]
    audit_part = report["audit"]
    if audit_part:
        lines += ["", "## Teacher against gold", "",
                  f"Teacher {audit_part['quality_name']} {audit_part['teacher_accuracy']:.3f} on "
                  f"{audit_part['rows_with_gold']} rows.", "",
                  *(["| gold label | teacher accuracy | rows |", "|---|---|---|",
                     *[f"| {label} | {c['accuracy']:.2f} | {c['rows']} |"
                       for label, c in audit_part["per_class"].items()],
                     ""] if audit_part["per_class"] else []),
                  *(["| field | teacher accuracy |", "|---|---|",
                     *[f"| {field} | {accuracy:.2f} |" for field, accuracy in audit_part["per_field"].items()],
                     ""] if audit_part["per_field"] else []),
                  "Disagreements to read:", "",
                  *[f"- {d['id']}: \"{d['text']}\" (gold {d['gold']}, teacher {d['teacher']})"
                    for d in audit_part["disagreements"]]]
    return "\n".join(lines) + "\n"


STAGE = Stage("filter", filter_stage, reads=("task", "filter", "teacher.model"),
              consumes=("generate",), produces=("train.parquet", "eval.parquet"))
