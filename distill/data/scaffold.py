"""`distill init DATA_FILE`: a first study config for a data file, every guess in it commented for a person to
check: the text and gold columns, the task type, and the label set (or a JSON schema) drawn from the gold.

The config it writes runs on the built-in models (`distill models list`), so `distill run` works at once.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.errors import UserError

TEXT_NAMES = ("text", "message", "input", "sentence", "query", "question", "content", "body", "prompt", "utterance")
GOLD_NAMES = ("label", "labels", "category", "intent", "class", "target", "gold", "answer", "output", "summary")
MAX_LABELS = 100  # more distinct gold values than this reads as free text, not a label set
# A field is proposed as exempt from grounding when more of its gold values than this are not in their input
# (Restaurant-8k: 16 of 8,198 spans end inside a word, "13:00" of "13:00pm", and still read as copied).
MAX_UNGROUNDED_GOLD = 0.05


@dataclass
class Proposal:
    """What `init` concluded about a data file, and why, for the comments of the config."""

    text_column: str
    gold_column: str | None
    task: dict[str, Any]
    rows: int
    notes: list[str] = field(default_factory=list)
    filter: dict[str, Any] = field(default_factory=dict)


def _strings(rows: list[dict[str, Any]], column: str) -> list[str]:
    values = [row.get(column) for row in rows]
    return [v if isinstance(v, str) else json.dumps(v) for v in values if v not in (None, "")]


def find_columns(rows: list[dict[str, Any]], text: str | None, gold: str | None) -> tuple[str, str | None]:
    """The text column (by name, else the longest text) and the gold column (by name, else few distinct values)."""
    columns = list(rows[0])
    for given in (text, gold):
        if given is not None and given not in columns:
            raise UserError(f"no column {given!r} in the data file; its columns are {columns}")
    lengths = {c: sum(map(len, _strings(rows, c))) / len(rows) for c in columns}
    text = text or next((c for c in columns if c.lower() in TEXT_NAMES), None) or max(columns, key=lengths.get)
    if gold is None:
        others = [c for c in columns if c != text and _strings(rows, c)]
        gold = (next((c for c in others if c.lower() in GOLD_NAMES), None)
                or next((c for c in others if _json_objects(_strings(rows, c)) is not None), None)
                or next((c for c in others if len(set(_strings(rows, c))) <= min(MAX_LABELS, len(rows) // 2)), None))
    return text, gold


def _json_objects(values: list[str]) -> list[dict[str, Any]] | None:
    try:
        parsed = [json.loads(v) for v in values]
    except json.JSONDecodeError:
        return None
    return parsed if parsed and all(isinstance(p, dict) for p in parsed) else None


def infer_schema(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON schema of the gold objects: every field seen, typed as seen, each allowed to be absent (null)."""
    kinds = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}
    seen: dict[str, set[str]] = {}
    for obj in objects:
        for key, value in obj.items():
            if value is not None:
                seen.setdefault(key, set()).add(kinds.get(type(value), "string"))
    properties = {key: {"type": [*sorted(types), "null"] if len(types) > 1 else [types.pop(), "null"]}
                  for key, types in seen.items()}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def propose_task(gold: list[str], notes: list[str]) -> dict[str, Any]:
    """The task section that fits the gold answers: extraction, classification or generation."""
    objects = _json_objects(gold)
    if objects is not None:
        notes.append(f"the gold values are JSON objects: an extraction task, schema inferred from {len(objects)} rows")
        return {"type": "extraction", "instruction": "Extract these fields from the text; leave out what it does "
                "not say.", "json_schema": infer_schema(objects)}
    counts = Counter(gold)
    if len(counts) <= MAX_LABELS and len(counts) < len(gold):
        notes.append(f"{len(counts)} distinct gold values: a classification task with them as labels")
        labels = [label for label, _ in counts.most_common()]
        return {"type": "classification", "instruction": "Classify the text. Choose the one label that fits best: "
                + ", ".join(labels) + ".", "labels": labels}
    notes.append("the gold values are free text: a generation task, scored by ROUGE-L against them")
    return {"type": "generation", "instruction": "Write the answer for the text in the style of the examples."}


def propose(path: Path, text: str | None = None, gold: str | None = None,
            labels: list[str] | None = None) -> Proposal:
    from distill.data.readers import read_table

    rows = read_table(path).rows  # all of them: a file sorted by label shows only some labels in its first rows
    if not rows or not isinstance(rows[0], dict):
        raise UserError(f"{path}: no rows of named columns to look at")
    text, gold = find_columns(rows, text, gold)
    notes = [f"read {len(rows)} rows; text column {text!r}" + (f", gold column {gold!r}" if gold else ", no gold")]
    if labels:
        task = {"type": "classification", "instruction": "Classify the text. Choose the one label that fits best: "
                + ", ".join(labels) + ".", "labels": labels}
    elif gold:
        task = propose_task(_strings(rows, gold), notes)
    else:
        raise UserError(f"{path}: found no gold column to propose a task from; name the labels with "
                        "--labels a,b,c (or the gold column with --gold-column)")
    proposal = Proposal(text, gold, task, len(rows), notes)
    if task["type"] == "extraction" and gold:
        proposal.filter = propose_grounding(rows, text, gold, notes)
    return proposal


def propose_grounding(rows: list[dict[str, Any]], text: str, gold: str, notes: list[str]) -> dict[str, Any]:
    """Grounding on, with the fields whose gold values are often not in their input (normalised: a date written
    "next Friday" kept as 2026-05-01) exempt."""
    from distill.tasks.grounding import FieldRules

    rules, values, missing = FieldRules({}), Counter(), Counter()
    for row in rows:
        answer = row.get(gold)
        answer = json.loads(answer) if isinstance(answer, str) else answer
        if isinstance(answer, dict) and isinstance(row.get(text), str):
            values.update(key for key, value in answer.items() if isinstance(value, str | list | dict))
            missing.update({f.field.split(".")[0] for f in rules.ungrounded(answer, row[text])})
    exempt = sorted(key for key, n in missing.items() if n > MAX_UNGROUNDED_GOLD * values[key])
    if exempt:
        counts = ", ".join(f"{k} ({missing[k]} of {values[k]})" for k in exempt)
        notes.append(f"grounding: the gold values of {counts} are not in their inputs, so those fields are exempt "
                     "(filter.ungrounded_fields)")
    else:
        notes.append("grounding: the gold values occur in their inputs, so the filter drops teacher answers whose "
                     "values do not (filter.grounding)")
    return {"grounding": True, "ungrounded_fields": exempt}


def _value(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)  # JSON is YAML, quoted safely


def render_config(proposal: Proposal, data_file: Path, out: Path, name: str) -> str:
    """The config text: what `propose` found, as YAML with a comment on each guess."""
    task = proposal.task
    inputs = os.path.relpath(data_file.resolve(), out.resolve().parent)
    task_lines = [f"  {key}: {_value(value)}" for key, value in task.items()]
    gold = f"  gold_column: {_value(proposal.gold_column)}   # used only to score teacher and student, never to train" \
        if proposal.gold_column else "  # gold_column: none found; add one to score teacher and student"
    return "\n".join([
        f"# Written by `distill init {data_file.name}`; check each guess below, then `distill run -c {out.name}`.",
        *[f"# - {note}" for note in proposal.notes],
        f"name: {_value(name)}", "",
        "task:   # the type and its answers were read off the gold column; reword the instruction for your data",
        *task_lines, "",
        "data:", f"  inputs: {_value(inputs)}   # relative to this file",
        f"  text_column: {_value(proposal.text_column)}", gold,
        f"  test_size: {min(50, max(1, proposal.rows // 5))}   # rows held out for compare; the rest is labelled",
        "  max_inputs: 1000   # label at most this many rows (raise it once the first run looks right)", "",
        *_filter_lines(proposal.filter),
        "teacher:   # built-in models (`distill models list`); any local folder, GGUF file or hub id works too",
        "  model: qwen2.5-coder-1.5b-instruct",
        "  max_tokens: 256" if task["type"] != "classification" else "  max_tokens: 16", "",
        "student:",
        "  model: smollm2-135m-instruct",
        "  lora: {r: 16, alpha: 32}",
        "  epochs: 3",
        "  max_tokens: 256" if task["type"] != "classification" else "  max_tokens: 16", "",
        "cost:   # $/hour of the machines; replace with your own prices",
        "  hardware: 2-core CPU",
        "  teacher_price_per_hour: 0.09",
        "  student_price_per_hour: 0.09",
        "  train_price_per_hour: 0.09", ""])


def _filter_lines(rules: dict[str, Any]) -> list[str]:
    if not rules:
        return []
    return ["filter:", "  grounding: true   # drop answers with a value that is not in their input (ungrounded)",
            f"  ungrounded_fields: {_value(rules['ungrounded_fields'])}   # fields the teacher may normalise: "
            "not checked", ""]


def write_config(data_file: Path, out: Path, name: str | None = None, text: str | None = None,
                 gold: str | None = None, labels: list[str] | None = None) -> Proposal:
    """Write the proposed config to `out` (never over an existing file) and check it as `distill validate` does."""
    from distill.artifacts import write_text
    from distill.config import load_config

    if out.exists():
        raise UserError(f"{out}: already exists; give another --output or remove it")
    proposal = propose(data_file, text, gold, labels)
    stem = "".join(c if c.isalnum() or c in "_.-" else "-" for c in (name or data_file.stem)).strip("-") or "study"
    write_text(out, render_config(proposal, data_file, out, stem))
    try:
        load_config(out)
    except UserError as exc:
        out.unlink()
        raise UserError(f"the proposed config does not validate (please report it): {exc}") from exc
    return proposal
