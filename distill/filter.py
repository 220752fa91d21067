"""The filter stage: keep only teacher labels worth learning from, and record why every other row was dropped.

It reads files only: changing a threshold and rerunning never calls the teacher.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from distill.artifacts import StageRecorder, read_manifest, read_rows, write_json, write_rows, write_text
from distill.config import Config
from distill.data import split_inputs
from distill.errors import UserError

REQUIRED_COLUMNS = ("id", "text", "label", "error")


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def drop_reason(row: dict[str, Any], config: Config, test_texts: set[str], seen: set[str]) -> str | None:
    """Why a row is dropped, or None to keep it. Checks run in a fixed order; the first that fails names it."""
    key = normalise(row["text"])
    if row["label"] is None:
        return "invalid"  # the teacher's output failed, or is not a valid label: nothing to learn from
    if key in test_texts:
        return "leaks_test"
    if config.filter.dedup_exact and key in seen:
        return "duplicate"
    seen.add(key)
    return None


def _check_columns(rows: list[dict[str, Any]], path: Path) -> None:
    missing = [c for c in REQUIRED_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise UserError(f"{path}: missing columns {missing}; rerun `distill generate`")


def split_train_eval(kept: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list, list]:
    order = list(kept)
    random.Random(seed).shuffle(order)
    n_eval = round(len(order) * fraction)
    return order[n_eval:], order[:n_eval]


def filter_stage(config: Config, run_dir: Path) -> dict[str, Any]:
    """Read `generate/outputs.parquet`; write `filter/train.parquet`, `eval.parquet`, `dropped.parquet`, a report."""
    read_manifest(run_dir / "generate", "distill generate")
    source = run_dir / "generate" / "outputs.parquet"
    stage_dir = run_dir / "filter"
    recorder = StageRecorder(stage_dir, "filter", config)
    rows = read_rows(source)
    _check_columns(rows, source)
    test_texts = {normalise(e.text) for e in split_inputs(config).test}
    kept, dropped, seen = [], [], set()
    for row in rows:
        reason = drop_reason(row, config, test_texts, seen)
        if reason is None:
            kept.append(row)
        else:
            dropped.append({**row, "drop_reason": reason})
    if not kept:
        drops = dict(Counter(r["drop_reason"] for r in dropped))
        raise UserError(f"{source}: the filter kept no rows (drops: {drops}); check the teacher's outputs")
    train, evaluation = split_train_eval(kept, config.filter.eval_fraction, config.filter.seed)
    write_rows(stage_dir / "train.parquet", train)
    write_rows(stage_dir / "eval.parquet", evaluation)
    write_rows(stage_dir / "dropped.parquet", dropped)
    report = {
        "rows_in": len(rows),
        "rows_kept": len(kept),
        "train": len(train),
        "eval": len(evaluation),
        "drops": dict(Counter(r["drop_reason"] for r in dropped)),
        "labels_before": dict(Counter(r["label"] for r in rows if r["label"] is not None).most_common()),
        "labels_after": dict(Counter(r["label"] for r in kept).most_common()),
    }
    write_json(stage_dir / "report.json", report)
    write_text(stage_dir / "report.md", _report_markdown(report))
    outputs = [stage_dir / name for name in ("train.parquet", "eval.parquet", "dropped.parquet", "report.json")]
    return recorder.finish(inputs={"generate_outputs": source}, outputs=outputs,
                           counts={k: report[k] for k in ("rows_in", "rows_kept", "train", "eval")},
                           drops=report["drops"])


def _report_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Filter report", "",
        f"Rows in: {report['rows_in']}; kept: {report['rows_kept']} (train {report['train']}, eval {report['eval']}).",
        "", "| drop reason | rows |", "|---|---|",
        *[f"| {reason} | {count} |" for reason, count in report["drops"].items()],
        "", "| label | before | after |", "|---|---|---|",
        *[f"| {label} | {count} | {report['labels_after'].get(label, 0)} |"
          for label, count in report["labels_before"].items()],
    ]
    return "\n".join(lines) + "\n"
