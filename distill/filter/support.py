"""Is each answer supported by its input? The filter's grounding rules (`filter.grounding`, `max_unsupported`) and
their part of the report.

The task type decides what is checked (distill/tasks/grounding.py): an extraction answer's string values must occur
in the input (drop reason `ungrounded`), and a generation answer's numbers and capitalised names are counted
(drop reason `unsupported` above `filter.max_unsupported`). Every valid answer is checked, whether or not the rule
drops it, so the report shows what the check finds even with it off.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from distill.config import FilterConfig
from distill.tasks import Task
from distill.tasks.grounding import Finding

EXAMPLES = 3  # first examples quoted per field in the report
GROUPS = {"ungrounded": {"supported": "every value found in the input", "unsupported": "a value not found"},
          "unsupported": {"supported": "no unsupported name or number", "unsupported": "one or more"}}


def findings(rows: list[dict[str, Any]], task: Task, rules: FilterConfig) -> list[list[Finding]]:
    """Per row, the parts of its answer that its input does not support (empty for an invalid answer)."""
    return [task.unsupported(row["label"], row["text"], rules.ungrounded_fields, rules.grounding_min_similarity)
            if row["label"] is not None else [] for row in rows]


def allowed(task: Task, rules: FilterConfig) -> int | None:
    """How many unsupported parts an answer may have; None: the rule is off."""
    if task.support_check == "ungrounded":
        return 0 if rules.grounding else None
    return rules.max_unsupported if task.support_check == "unsupported" else None


def support_reasons(reasons: list[str | None], found: list[list[Finding]], task: Task, rules: FilterConfig) -> None:
    limit = allowed(task, rules)
    if limit is None:
        return
    for i, parts in enumerate(found):
        if reasons[i] is None and len(parts) > limit:
            reasons[i] = task.support_check


def column(parts: list[Finding]) -> str | None:
    """A row's `grounding` column: its unsupported parts as JSON, or null."""
    return json.dumps([{"field": p.field, "value": p.value} for p in parts], ensure_ascii=False) if parts else None


def rule_text(task: Task, rules: FilterConfig) -> str | None:
    """The rule in one sentence, for the report and the dataset card."""
    if task.support_check == "ungrounded":
        if not rules.grounding:
            return "Grounding is off (filter.grounding: false): answers with values not in their input are kept."
        exempt = f" Not checked: {', '.join(rules.ungrounded_fields)}." if rules.ungrounded_fields else ""
        near = (f" A value also counts as found at rapidfuzz similarity >= {rules.grounding_min_similarity}."
                if rules.grounding_min_similarity else "")
        return ("Every string value of a kept answer occurs in its input as whole tokens, after folding case, "
                "accents, spaces and punctuation at the ends of words; enum fields and non-strings are not checked."
                + exempt + near)
    if task.support_check == "unsupported":
        limit = rules.max_unsupported
        return ("Numbers and capitalised names in an answer that its input never writes are counted per row"
                + (f"; answers with more than {limit} were dropped." if limit is not None else " (not dropped)."))
    return None


class Tally:
    """The grounding part of the report, counted batch by batch over every row: per field, the values not found in
    their input with the first examples; per-row counts; and with gold, the teacher's quality on supported vs
    unsupported answers (the scores of rows with gold are kept: one float each)."""

    def __init__(self, task: Task, rules: FilterConfig) -> None:
        self.task, self.rules = task, rules
        self.per_field: dict[str, dict[str, Any]] = defaultdict(lambda: {"values": 0, "examples": []})
        self.per_row: Counter[int] = Counter()
        self.gold: dict[str, list[float]] = {"supported": [], "unsupported": []}

    def see(self, rows: list[dict[str, Any]], found: list[list[Finding]]) -> None:
        if self.task.support_check is None:
            return
        for row, parts in zip(rows, found, strict=True):
            for part in parts:
                entry = self.per_field[part.field]
                entry["values"] += 1
                if len(entry["examples"]) < EXAMPLES:
                    entry["examples"].append({"id": row["id"], "text": row["text"], "value": part.value})
            if row["label"] is not None:
                self.per_row[len(parts)] += 1
                if row.get("gold") is not None:
                    score = self.task.score(row["label"], row["gold"])
                    self.gold["unsupported" if parts else "supported"].append(score)

    def result(self) -> dict | None:
        task = self.task
        if task.support_check is None:
            return None
        checked = sum(self.per_row.values())
        gold = ({name: _rate(scores, task.binary_score) for name, scores in self.gold.items()}
                if any(self.gold.values()) else None)
        return {"check": task.support_check, "rule": rule_text(task, self.rules), "limit": allowed(task, self.rules),
                "rows_checked": checked, "rows_unsupported": checked - self.per_row[0],
                "per_row": {str(k): v for k, v in sorted(self.per_row.items())},
                "per_field": dict(sorted(self.per_field.items(), key=lambda kv: -kv[1]["values"])),
                "gold": gold}


def _rate(scores: list[float], binary: bool) -> dict[str, Any]:
    if not scores:
        return {"rows": 0, "quality": None, "ci": None}
    ci = None
    if binary:
        from scipy.stats import binomtest

        interval = binomtest(int(sum(scores)), len(scores)).proportion_ci(0.95, method="exact")
        ci = [interval.low, interval.high]
    return {"rows": len(scores), "quality": sum(scores) / len(scores), "ci": ci}


def markdown(part: dict[str, Any] | None, quality_name: str) -> list[str]:
    if not part:
        return []
    noun = "values not found in the input" if part["check"] == "ungrounded" else "names and numbers not in the input"
    lines = ["", "## Grounding", "", part["rule"], "",
             f"{part['rows_unsupported']} of {part['rows_checked']} valid answers have {noun} "
             f"(drop reason `{part['check']}`" + (", off)." if part["limit"] is None else ")."), ""]
    if part["per_field"]:
        lines += ["| field | values not found | first examples (input: value) |", "|---|---|---|",
                  *[f"| {name} | {entry['values']} | " + "; ".join(
                      f"\"{e['text'][:80]}\": {e['value']!r}" for e in entry["examples"]).replace("|", "\\|") + " |"
                    for name, entry in part["per_field"].items()], ""]
    if part["gold"]:
        lines += [f"| teacher's answers | rows | {quality_name} vs gold [95% CI] |", "|---|---|---|",
                  *[f"| {GROUPS[part['check']][name]} | {g['rows']} | {_shown(g)} |"
                    for name, g in part["gold"].items()]]
    return lines


def _shown(group: dict[str, Any]) -> str:
    if group["quality"] is None:
        return "-"
    ci = f" [{group['ci'][0]:.3f}, {group['ci'][1]:.3f}]" if group["ci"] else ""
    return f"{group['quality']:.3f}{ci}"
