"""Classification: one label per input from a fixed set, or (multi_label) any number of them.

The label set is enforced by constrained decoding: a choice among the labels, or a JSON array of them.
A multi-label answer is canonical as a compact JSON list in label-set order.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from distill.errors import UserError
from distill.stats import class_report, multilabel_report
from distill.strict import read_json_file, resolve_existing
from distill.tasks.base import Parsed, Task, TaskSettings

RATIONALE_INSTRUCTION = (
    "\n\nReply with a JSON object: first a short 'rationale' (one or two sentences on why), then the 'label'."
)


class ClassificationSettings(TaskSettings):
    type: Literal["classification"] = "classification"
    labels: list[str] | None = Field(None, description="The label set, inline.")
    labels_file: Path | None = Field(None, description="A JSON list of labels, instead of `labels`.")
    multi_label: bool = Field(False, description="Each input may carry any number of the labels (a JSON list).")
    student_prompt: str = "{text}\nLabel:"

    _check_labels_file = field_validator("labels_file")(resolve_existing)

    @model_validator(mode="after")
    def _one_label_source(self) -> ClassificationSettings:
        if (self.labels is None) == (self.labels_file is None):
            raise ValueError("give exactly one of `labels` or `labels_file`")
        if self.labels is not None and (problem := label_problem(self.labels)):
            raise ValueError(f"`labels`: {problem}")
        return self

    def content(self) -> dict[str, Any]:
        view = super().content()
        view.pop("labels_file")
        return view | {"labels": self.label_set()}

    def label_set(self) -> list[str]:
        if self.labels is not None:
            return list(self.labels)
        assert self.labels_file is not None
        labels = read_json_file(self.labels_file, "task.labels_file", "the label list")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise UserError(f"{self.labels_file}: task.labels_file must hold a JSON list of at least two strings")
        if problem := label_problem(labels):
            raise UserError(f"{self.labels_file} (task.labels_file): {problem}")
        return labels


def label_problem(labels: list[str]) -> str | None:
    """What makes a label set unusable: an empty label (nothing to answer), one given twice (the constraint and
    the scores would count it twice), fewer than two."""
    if any(not label.strip() for label in labels):
        return "a label is empty or only spaces; remove it"
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        return f"{', '.join(map(repr, repeated))} given more than once; list each label once"
    if len(labels) < 2:
        return "give at least two labels"
    return None


class ClassificationTask(Task):
    name = "classification"
    Settings = ClassificationSettings
    supports_rationale = True

    def __init__(self, settings: ClassificationSettings) -> None:  # type: ignore[override]
        super().__init__(settings)
        self.settings: ClassificationSettings = settings
        self.labels = settings.label_set()
        self._order = {label: i for i, label in enumerate(self.labels)}
        self._read_as: dict[str, list[str]] = {}
        for label in self.labels:
            self._read_as.setdefault(as_read(label), []).append(label)
        self.multi = settings.multi_label
        self.single_label = not self.multi
        if self.multi:
            self.quality_name = "exact set match"

    def system_prompt(self) -> str:
        # The instruction and label list come first and are identical for every row, so vLLM's prefix
        # cache serves them after the first request.
        answer = ("Answer with a JSON list of every label that applies (an empty list if none does)."
                  if self.multi else "Answer with exactly one label from the list and nothing else.")
        return f"{self.settings.instruction.strip()}\n\nAllowed labels:\n" + "\n".join(self.labels) + f"\n\n{answer}"

    def teacher_messages(self, text: str, rationale: bool = False) -> list[dict[str, str]]:
        system = self.system_prompt() + (RATIONALE_INSTRUCTION if rationale else "")
        return [{"role": "system", "content": system}, {"role": "user", "content": text}]

    def _answer_schema(self) -> dict[str, Any]:
        if self.multi:
            return {"type": "array", "items": {"enum": self.labels}, "maxItems": len(self.labels)}
        return {"enum": self.labels}

    def teacher_constraint(self, rationale: bool = False) -> dict[str, Any]:
        if rationale:
            # "rationale" comes first in the object, so the teacher explains before it commits to a label.
            return {"json": {"type": "object", "additionalProperties": False, "required": ["rationale", "label"],
                             "properties": {"rationale": {"type": "string", "maxLength": 300},
                                            "label": self._answer_schema()}}}
        return {"json": self._answer_schema()} if self.multi else {"choice": self.labels}

    def answer_token_budget(self, max_tokens: int, rationale: bool = False) -> int:
        """Never cut an answer short: under a constraint a label may be spelt in as many tokens as it has
        characters, and the constraint ends generation anyway."""
        if rationale:
            return max_tokens
        if self.multi:
            return max(max_tokens, sum(len(label) + 3 for label in self.labels) + 2)
        return max(max_tokens, max(len(label) for label in self.labels) + 1)

    def parse(self, raw: str | None, rationale: bool = False) -> Parsed:
        if raw is None:
            return Parsed(None, "no output")
        if rationale:
            return self._parse_with_rationale(raw)
        return self._parse_answer(raw.strip())

    def _label(self, value: Any) -> tuple[str | None, str | None]:
        """The label `value` names, read as a person would (case, spaces or underscores, surrounding quotes and
        punctuation aside: `Card delivery estimate.` is `card_delivery_estimate`), or why none."""
        if not isinstance(value, str):
            return None, f"not in the label set: {str(value)[:80]!r}"
        if value in self._order:
            return value, None
        found = self._read_as.get(as_read(value), [])
        if len(found) == 1:
            return found[0], None
        if found:
            return None, f"matches several labels ({', '.join(found[:3])}): {value[:80]!r}"
        return None, f"not in the label set: {value[:80]!r}"

    def _parse_answer(self, value: Any) -> Parsed:
        if not self.multi:
            label, error = self._label(value)
            return Parsed(label, error)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                return Parsed(None, f"not a JSON list: {exc.msg} at {exc.pos}")
        if not isinstance(value, list):
            return Parsed(None, "not a JSON list of labels")
        read = [self._label(v) for v in value]
        errors = [error for _, error in read if error is not None]
        if errors:
            return Parsed(None, errors[0])
        labels = {label for label, _ in read}
        return Parsed(json.dumps(sorted(labels, key=self._order.__getitem__), ensure_ascii=False), None)

    def _parse_with_rationale(self, raw: str) -> Parsed:
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            return Parsed(None, f"not valid JSON: {exc.msg} at {exc.pos}")
        if not isinstance(obj, dict) or not isinstance(obj.get("rationale"), str):
            return Parsed(None, "JSON without a string 'rationale'")
        label = self._parse_answer(obj.get("label"))
        return Parsed(label.value, label.error, obj["rationale"])

    def parse_gold(self, raw: str) -> str:
        """Multi-label gold may be a JSON list or labels separated by '|'."""
        if self.multi and not raw.lstrip().startswith("["):
            raw = json.dumps([part.strip() for part in raw.split("|") if part.strip()])
        return super().parse_gold(raw)

    def student_target(self, value: str) -> str:
        # A leading space keeps a label's tokens the same as where it follows "Label:" in running text.
        return value if self.multi else " " + value

    def student_constraint(self) -> dict[str, Any]:
        if self.multi:
            return {"json": self._answer_schema()}
        return {"choice": [self.student_target(label) for label in self.labels]}

    def details(self, predictions: Sequence[str | None], gold: Sequence[str | None]) -> dict[str, Any]:
        if not self.multi:
            return class_report(predictions, gold, self.labels)
        return multilabel_report([None if p is None else json.loads(p) for p in predictions],
                                 [None if g is None else json.loads(g) for g in gold], self.labels)

    def categories(self, value: str) -> list[str]:
        return json.loads(value) if self.multi else [value]


_EDGES = string.punctuation + string.whitespace + "“”‘’"


def as_read(text: str) -> str:
    """A label as a person reads it: lower case, underscores, hyphens and runs of spaces as one space, without
    surrounding quotes or punctuation."""
    return re.sub(r"[\s_\-]+", " ", text.strip(_EDGES).lower()).strip()
