"""The filter stage (`distill filter`): reads `generate/outputs.parquet` and `generate/test.parquet`, writes
`filter/train.parquet`, `eval.parquet`, `dropped.parquet` and `report.json`/`report.md`.

Keep only teacher labels worth learning from, and record why every other row was dropped.

Checks run in a fixed order and the first that fails names the row's reason: truncated, invalid, too_short,
too_long, output_too_long, low_confidence, low_vote_share, ungrounded / unsupported (an answer its input does not
support: support.py), leaks_test (exact or near copy of a held-out test
query), duplicate, near_duplicate, over_label_cap; training rows beyond `filter.max_train_rows` are
over_label_budget. It reads files only: a new threshold never calls the teacher.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from distill.artifacts import read_rows, write_json, write_rows, write_text
from distill.config import Config, FilterConfig
from distill.data.inputs import normalise  # one notion of "the same text" for the filter and `validate`
from distill.errors import UserError
from distill.filter import support
from distill.filter.card import card_path, dataset_card
from distill.layout import RunLayout
from distill.stages import Manifest, Stage, StageRecorder, read_manifest
from distill.tasks import Task, make_task
from distill.tasks.grounding import Finding
from teacher import fidelity
from teacher.rows import TEACHER_COLUMNS, TEST_COLUMNS

# What filter adds to the teacher's rows: the parts of the answer its input does not support (support.column).
KEPT_COLUMNS = (*TEACHER_COLUMNS, "grounding")


def confidence(row: dict[str, Any], per_label: bool) -> float | None:
    """The teacher's confidence as `filter.min_logprob` reads it: a single label's log-probability (that label's
    probability, however many tokens it takes), else the mean log-probability per answer token, so a long JSON
    object or summary is not dropped for its length."""
    if row["logprob"] is None or per_label:
        return row["logprob"]
    samples = max(len(json.loads(row.get("samples") or "[]")), 1)  # completion tokens count every sample's
    return row["logprob"] / max((row.get("completion_tokens") or 0) / samples, 1.0)


def row_reason(row: dict[str, Any], rules: FilterConfig, per_label: bool = True) -> str | None:
    """The first per-row check a row fails, or None."""
    if row.get("finish_reason") == "length":
        return "truncated"  # cut off at teacher.max_tokens: even an answer that parses may be incomplete
    if row["label"] is None:
        return "invalid"  # the teacher's output failed, or is not a valid label: nothing to learn from
    length = len(row["text"])
    if rules.min_text_chars is not None and length < rules.min_text_chars:
        return "too_short"
    if rules.max_text_chars is not None and length > rules.max_text_chars:
        return "too_long"
    if rules.max_output_chars is not None and len(row["raw"] or "") > rules.max_output_chars:
        return "output_too_long"
    sure = confidence(row, per_label) if rules.min_logprob is not None else None
    if rules.min_logprob is not None and (sure is None or sure < rules.min_logprob):
        return "low_confidence"
    share = row.get("vote_share")
    if rules.min_vote_share is not None and share is not None and share < rules.min_vote_share:
        return "low_vote_share"
    return None


def exact_reasons(rows: list[dict[str, Any]], reasons: list[str | None], test_keys: set[str], dedup: bool) -> None:
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if reasons[i] is not None:
            continue
        key = normalise(row["text"])
        if key in test_keys:
            reasons[i] = "leaks_test"
        elif dedup and key in seen:
            reasons[i] = "duplicate"
        seen.add(key)


def near_reasons(rows: list[dict[str, Any]], reasons: list[str | None], test_texts: list[str],
                 threshold: float) -> None:
    """Near copies of a test query leak it; near copies of an earlier kept row add nothing.

    Test queries and kept rows share one index, so each row costs a single LSH query.
    """
    from distill.filter.neardup import NearIndex, signatures

    index = NearIndex(threshold)
    for j, signature in enumerate(signatures(test_texts)):
        index.add(f"test:{j}", signature)
    candidates = [i for i, reason in enumerate(reasons) if reason is None]
    for i, signature in zip(candidates, signatures(rows[i]["text"] for i in candidates), strict=True):
        matches = index.matches(signature)
        if any(key.startswith("test:") for key in matches):
            reasons[i] = "leaks_test"
        elif matches:
            reasons[i] = "near_duplicate"
        else:
            index.add(str(i), signature)


def cap_reasons(rows: list[dict[str, Any]], reasons: list[str | None], cap: int) -> None:
    """Keep the `cap` most confident rows of each label (ties: earlier rows first)."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, reason in enumerate(reasons):
        if reason is None:
            by_label[rows[i]["label"]].append(i)
    for indices in by_label.values():
        ranked = sorted(indices, key=lambda i: (-(rows[i]["logprob"] if rows[i]["logprob"] is not None
                                                   else float("-inf")), i))
        for i in ranked[cap:]:
            reasons[i] = "over_label_cap"


def drop_reasons(rows: list[dict[str, Any]], config: Config, test_texts: list[str],
                 found: list[list[Finding]] | None = None) -> list[str | None]:
    rules = config.filter
    task = make_task(config.task)
    reasons = [row_reason(row, rules, task.single_label) for row in rows]
    support.support_reasons(reasons, support.findings(rows, task, rules) if found is None else found, task, rules)
    exact_reasons(rows, reasons, {normalise(t) for t in test_texts}, rules.dedup_exact)
    if rules.near_dup_threshold is not None:
        near_reasons(rows, reasons, test_texts, rules.near_dup_threshold)
    if rules.max_per_label is not None:
        cap_reasons(rows, reasons, rules.max_per_label)
    return reasons


def check_contract(rows: list[dict[str, Any]], path: Path, task: Task) -> None:
    """Refuse, before any work, outputs made under another label set or schema."""
    for value in sorted({r["label"] for r in rows if r["label"] is not None}):
        parsed = task.parse(value)
        if parsed.value != value:
            raise UserError(f"{path}: answer {value[:80]!r} is not valid under the config's task ({parsed.error}); "
                            "the outputs were made with another label set or schema: rerun `distill generate`")


def split_train_eval(kept: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list, list]:
    """A seeded order from each row's own id (a hash of its content), not its position: a row inserted at the
    top of the inputs leaves every other row on its side of the split."""
    order = sorted(kept, key=lambda row: hashlib.sha256(f"{seed}:{row['id']}".encode()).digest())
    n_eval = round(len(order) * fraction)
    return order[n_eval:], order[:n_eval]


def audit(rows: list[dict[str, Any]], task: Task, samples: int, seed: int) -> dict[str, Any] | None:
    """The teacher's quality against gold (per class for labels, per field for JSON), and a seeded sample of
    disagreements to read."""
    graded = [r for r in rows if r.get("gold") is not None and r["label"] is not None]
    if not graded:
        return None
    scores = [task.score(r["label"], r["gold"]) for r in graded]
    per_class: dict[str, list[float]] = defaultdict(list)
    if task.single_label:
        for row, score in zip(graded, scores, strict=True):
            per_class[row["gold"]].append(score)
    wrong = [r for r, score in zip(graded, scores, strict=True) if score < 1]
    sample = random.Random(seed).sample(wrong, min(samples, len(wrong)))
    details = task.details([r["label"] for r in graded], [r["gold"] for r in graded])
    return {
        "rows_with_gold": len(graded),
        "quality_name": task.quality_name,
        "teacher_accuracy": sum(scores) / len(scores),
        "per_class": {label: {"accuracy": sum(s) / len(s), "rows": len(s)} for label, s in sorted(per_class.items())},
        "per_field": details.get("per_field", {}),
        "disagreements": [{"id": r["id"], "text": r["text"], "gold": r["gold"], "teacher": r["label"]}
                          for r in sample],
    }


def _counts(task: Task, values: list[str]) -> dict[str, int]:
    """Answers per label (or per filled field); empty for free text."""
    return dict(Counter(c for value in values for c in task.categories(value)).most_common())


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
    source = layout.generate.outputs
    rows = read_rows(source, TEACHER_COLUMNS)
    test_texts = [row["text"] for row in read_rows(layout.generate.test, TEST_COLUMNS)]
    task = make_task(config.task)
    check_contract(rows, source, task)
    files = layout.filter
    recorder = StageRecorder(STAGE, config, layout)
    with recorder.timed("filters"):
        found = support.findings(rows, task, config.filter)
        reasons = drop_reasons(rows, config, test_texts, found)
    for row, parts in zip(rows, found, strict=True):
        row["grounding"] = support.column(parts)
    kept = [row for row, reason in zip(rows, reasons, strict=True) if reason is None]
    dropped = [{**row, "drop_reason": reason} for row, reason in zip(rows, reasons, strict=True) if reason]
    if not kept:
        raise _nothing_kept(source, Counter(reasons))
    train, evaluation = split_train_eval(kept, config.filter.eval_fraction, config.filter.seed)
    budget = config.filter.max_train_rows or len(train)
    train, over_budget = train[:budget], train[budget:]
    kept = train + evaluation
    dropped += [{**row, "drop_reason": "over_label_budget"} for row in over_budget]
    write_rows(files.train, train, KEPT_COLUMNS)
    write_rows(files.eval, evaluation, KEPT_COLUMNS)
    write_rows(files.dropped, dropped, (*KEPT_COLUMNS, "drop_reason"))
    report = build_report(rows, kept, train, evaluation, dropped, task, config)
    report["grounding"] = support.report(rows, found, task, config.filter)
    report["constraint_fidelity"] = fidelity.load(layout.generate.fidelity)
    write_json(files.report_json, report)
    write_text(files.report_md, report_markdown(report))
    write_text(card_path(layout), dataset_card(config, report))  # deterministic, so hashed with the data
    return recorder.finish(outputs=[files.train, files.eval, files.dropped, files.report_json, card_path(layout)],
                           counts={k: report[k] for k in ("rows_in", "rows_kept", "train", "eval")},
                           drops=report["drops"])


def build_report(rows: list[dict], kept: list[dict], train: list[dict], evaluation: list[dict],
                 dropped: list[dict], task: Task, config: Config) -> dict[str, Any]:
    return {
        "rows_in": len(rows), "rows_kept": len(kept), "train": len(train), "eval": len(evaluation),
        "drops": dict(Counter(r["drop_reason"] for r in dropped).most_common()),
        "labels_before": _counts(task, [r["label"] for r in rows if r["label"] is not None]),
        "labels_after": _counts(task, [r["label"] for r in kept]),
        "audit": audit(rows, task, config.filter.audit_samples, config.filter.seed),
        # Placeholder strings ("null", "N/A") the teacher wrote where a value belongs; never kept as values.
        "placeholders": dict(Counter(f for r in rows for f in task.placeholder_fields(r["raw"])).most_common()),
    }


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
