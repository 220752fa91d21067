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
MAX_LABELS = 100  # up to this many distinct gold values that repeat read as labels; more must repeat like labels
# A field is proposed as exempt from grounding when more of its gold values than this are not in their input
# (Restaurant-8k: 16 of 8,198 spans end inside a word, "13:00" of "13:00pm", and still read as copied).
MAX_UNGROUNDED_GOLD = 0.05
EXTRACTION_SHARE = 0.9  # gold rows that must be JSON objects for extraction; the others are reported, not obeyed
TASK_TYPES = ("classification", "extraction", "generation")
# The task lists the labels itself ("Allowed labels:"), so the instruction does not: once per request is enough.
CLASSIFY = "Classify the text. Choose the one label that fits best."
GENERIC_GOLD = {"answer", "output", "target", "gold", "label", "labels", "reference", "response", "completion"}


@dataclass
class Proposal:
    """What `init` concluded about a data file, and why, for the comments of the config."""

    text_column: str
    gold_column: str | None
    task: dict[str, Any]
    rows: int
    notes: list[str] = field(default_factory=list)
    filter: dict[str, Any] = field(default_factory=dict)
    max_seq_len: int | None = None  # from the student-token lengths of the rows, where its tokenizer is at hand


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
                or next((c for c in others if _mostly_objects(_strings(rows, c))), None)
                or next((c for c in others if len(set(_strings(rows, c))) <= min(MAX_LABELS, len(rows) // 2)), None))
    return text, gold


def _json_object(value: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _mostly_objects(values: list[str]) -> bool:
    objects = sum(_json_object(v) is not None for v in values)
    return bool(values) and objects >= EXTRACTION_SHARE * len(values)


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


def looks_like_labels(counts: Counter[str], rows: int) -> bool:
    """Values that repeat as labels do: fewer than the rows and, beyond MAX_LABELS, nearly every one seen three
    times or more on average (151 intents of 100 rows each are labels; summaries seen once are not)."""
    if len(counts) >= rows:
        return False
    once = sum(1 for n in counts.values() if n == 1)
    return len(counts) <= MAX_LABELS or (once <= 0.05 * rows and rows >= 3 * len(counts))


def propose_task(gold: list[tuple[str, str]], notes: list[str], gold_column: str, kind: str | None = None
                 ) -> dict[str, Any]:
    """The task section that fits the gold answers (each with where it is in the file): extraction,
    classification or generation, or the `kind` asked for."""
    values = [v for _, v in gold]
    if kind == "extraction" or (kind is None and _mostly_objects(values)):
        return _extraction(gold, notes)
    counts = Counter(values)
    if kind == "classification" or (kind is None and looks_like_labels(counts, len(values))):
        notes.append(f"{len(counts)} distinct gold values: a classification task with them as labels")
        return {"type": "classification", "instruction": CLASSIFY, "labels": [v for v, _ in counts.most_common()]}
    return _generation(values, notes, gold_column)


def _extraction(gold: list[tuple[str, str]], notes: list[str]) -> dict[str, Any]:
    objects = [(where, _json_object(v)) for where, v in gold]
    bad = [where for where, obj in objects if obj is None]
    kept = [obj for _, obj in objects if obj is not None]
    if not kept:
        raise UserError("no gold value is a JSON object, so no extraction schema can be inferred; check the gold "
                        "column (--gold-column) or choose another --type")
    notes.append(f"the gold values are JSON objects: an extraction task, schema inferred from {len(kept)} rows")
    if bad:
        notes.append(f"{len(bad)} gold value(s) are not JSON objects ({', '.join(bad[:5])}"
                     + (", ..." if len(bad) > 5 else "") + "): fix or remove them; `distill validate` names each")
    return {"type": "extraction", "instruction": "Extract these fields from the text; leave out what it does "
            "not say.", "json_schema": infer_schema(kept)}


def _generation(values: list[str], notes: list[str], gold_column: str) -> dict[str, Any]:
    """An instruction that says what to write, from the gold column's name and the answers' usual length (the
    teacher sees no examples)."""
    notes.append("the gold values are free text: a generation task, scored by ROUGE-L against them")
    noun = gold_column.replace("_", " ").strip().lower()
    noun = "answer" if noun in GENERIC_GOLD or not noun else noun
    words = sorted(len(v.split()) for v in values)
    typical = words[len(words) // 2] if words else 0
    return {"type": "generation",
            "instruction": f"Read the text and write its {noun}" + (f", in about {typical} words." if typical else ".")}


def propose(path: Path, text: str | None = None, gold: str | None = None,
            labels: list[str] | None = None, kind: str | None = None) -> Proposal:
    from distill.data.readers import read_table

    table = read_table(path)  # all of it: a file sorted by label shows only some labels in its first rows
    rows = table.rows
    if not rows or not isinstance(rows[0], dict):
        raise UserError(f"{path}: no rows of named columns to look at")
    if kind is not None and kind not in TASK_TYPES:
        raise UserError(f"--type {kind}: choose one of {', '.join(TASK_TYPES)}")
    text, gold = find_columns(rows, text, gold)
    notes = [f"read {len(rows)} rows; text column {text!r}" + (f", gold column {gold!r}" if gold else ", no gold")]
    if labels:
        task = {"type": "classification", "instruction": CLASSIFY, "labels": labels}
    elif gold:
        task = propose_task(_gold(table, gold), notes, gold, kind)
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
        answer = _json_or_none(row.get(gold))  # bad gold rows are reported by propose, not here
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


def _json_or_none(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return None


def _gold(table: Any, column: str) -> list[tuple[str, str]]:
    """The gold column's non-empty values, each with its row (and line) for messages."""
    values = [(table.where(i), row.get(column)) for i, row in enumerate(table.rows)]
    return [(where, v if isinstance(v, str) else json.dumps(v)) for where, v in values if v not in (None, "")]


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
        *([f"  max_seq_len: {proposal.max_seq_len}   # the longest prompt + gold answer in the student's tokens, "
           "so training cuts no input"] if proposal.max_seq_len else []),
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
                 gold: str | None = None, labels: list[str] | None = None, kind: str | None = None) -> Proposal:
    """Write the proposed config to `out` (never over an existing file) and check it as `distill validate` does;
    then size `student.max_seq_len` from the rows' lengths in the student's tokens."""
    from distill.artifacts import write_text

    if out.exists():
        raise UserError(f"{out}: already exists; give another --output or remove it")
    proposal = propose(data_file, text, gold, labels, kind)
    stem = "".join(c if c.isalnum() or c in "_.-" else "-" for c in (name or data_file.stem)).strip("-") or "study"
    write_text(out, render_config(proposal, data_file, out, stem))
    config = _loaded(out)
    proposal.max_seq_len = _max_seq_len(config)
    if proposal.max_seq_len is not None:
        write_text(out, render_config(proposal, data_file, out, stem))
        _loaded(out)
    return proposal


def _loaded(out: Path) -> Any:
    from distill.config import load_config

    try:
        return load_config(out)
    except UserError as exc:
        out.unlink()
        raise UserError(f"the proposed config does not validate (please report it): {exc}") from exc


def _max_seq_len(config: Any) -> int | None:
    """No longer than the data needs, and long enough that no input is cut (gold answers stand in for labels)."""
    from distill.data.inputs import load_examples
    from distill.data.lengths import load_tokenizer, proposed_max_len, sequence_lengths
    from distill.tasks import make_task

    tokenizer = load_tokenizer(config.student.model)
    if tokenizer is None:
        return None
    examples = load_examples(config.data.inputs, config.data)  # gold as written: a bad row is counted too
    return proposed_max_len(sequence_lengths(make_task(config.task), config.student, [e.text for e in examples],
                                             [e.gold for e in examples], tokenizer))
