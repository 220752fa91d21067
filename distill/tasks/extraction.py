"""Extraction: one JSON object per input, valid against a JSON schema from the config.

The schema constrains decoding for teacher and student alike. An answer is canonical as compact JSON with the
schema's properties in schema order and unmentioned fields left out (null and absent mean the same: "not in
the text"), so an empty object is a real answer: "nothing to extract". Fields compare exactly after trimming
whitespace and ignoring case.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from distill.errors import UserError
from distill.strict import read_json_file, resolve_existing
from distill.tasks.base import Parsed, Task, TaskSettings
from distill.tasks.grounding import FieldRules, Finding, field_paths

# What models write for "no value" when a schema lets them write a string: never a value to train on or score.
PLACEHOLDERS = ("", "null", "none", "nil", "n/a", "na", "-", "--", "?", "not given", "not specified", "not stated",
                "not mentioned", "not provided", "not available", "unspecified", "undefined")
JSON_SEPARATORS = {"spaced": (", ", ": "), "compact": (",", ":")}  # item and key separators per json_layout
# A model answering without a constraint often wraps its JSON in a Markdown code fence.
FENCE = re.compile(r"\s*```[A-Za-z]*[ \t]*\n(.*?)\n?```\s*", re.DOTALL)


class ExtractionSettings(TaskSettings):
    type: Literal["extraction"]
    json_schema: dict[str, Any] | None = Field(None, description="JSON schema of one answer object, inline.")
    json_schema_file: Path | None = Field(None, description="A JSON schema file, instead of `json_schema`.")
    student_prompt: str = "{text}\nJSON:\n"
    json_layout: Literal["spaced", "compact", "free"] = Field(
        "spaced", description="The teacher's JSON layout under the constraint, shown in its prompt. spaced: one "
        "line, a space after each , and : (as models write JSON); compact: no spaces (about 23% fewer answer "
        "tokens, but it changed the teacher's answers: bench/constraint_fidelity.py); free: any whitespace.")
    placeholders: Literal["absent", "invalid"] = Field(
        "absent", description="A field whose value is a placeholder (`placeholder_values`, e.g. the string "
        "\"null\" or \"N/A\"): absent: the field is left out, as if not in the text; invalid: the answer is invalid.")
    placeholder_values: list[str] = Field(
        list(PLACEHOLDERS), description="Strings that stand for \"no value\" (compared trimmed, ignoring case).")

    _check_schema_file = field_validator("json_schema_file")(resolve_existing)

    @model_validator(mode="after")
    def _one_valid_schema(self) -> ExtractionSettings:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        if (self.json_schema is None) == (self.json_schema_file is None):
            raise ValueError("give exactly one of `json_schema` or `json_schema_file`")
        schema = self.schema()
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
            raise ValueError("the schema must describe an object with `properties` (the fields to extract)")
        return self

    def content(self) -> dict[str, Any]:
        view = super().content()
        view.pop("json_schema_file")
        return view | {"json_schema": self.schema()}

    def schema(self) -> dict[str, Any]:
        if self.json_schema is not None:
            return self.json_schema
        assert self.json_schema_file is not None
        schema = read_json_file(self.json_schema_file, "task.json_schema_file", "the schema")
        if not isinstance(schema, dict):
            raise UserError(f"{self.json_schema_file}: task.json_schema_file must hold a JSON object")
        return schema


def json_grammar(schema: dict[str, Any], separators: tuple[str, str]) -> str:
    """The schema as an EBNF grammar with a fixed layout (xgrammar builds it, as vLLM's xgrammar backend would
    for a JSON-schema constraint; sent per request, so it holds whatever the server's whitespace setting)."""
    return _json_grammar(json.dumps(schema), separators)  # key order kept: it is the field order


@functools.lru_cache(maxsize=8)
def _json_grammar(schema: str, separators: tuple[str, str]) -> str:
    try:
        import xgrammar
    except ImportError:
        raise UserError("task.json_layout needs the xgrammar package (it comes with vLLM): install it, or set "
                        "task.json_layout: free") from None
    return str(xgrammar.Grammar.from_json_schema(schema, any_whitespace=False, separators=separators))


def _describe(spec: dict[str, Any]) -> str:
    """A field's kind for the prompt: "string or null; the day of the booking, as written"."""
    kinds = spec.get("type", "any JSON value")
    kind = " or ".join(kinds) if isinstance(kinds, list) else kinds
    if "enum" in spec:
        kind = "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in spec["enum"])
    return f"{kind}; {spec['description']}" if spec.get("description") else kind


def _loads(raw: str) -> Any:
    fenced = FENCE.fullmatch(raw)
    return json.loads(fenced.group(1) if fenced else raw)


def _same(first: Any, second: Any) -> bool:
    if isinstance(first, str) and isinstance(second, str):
        return first.strip().casefold() == second.strip().casefold()
    return first == second


class ExtractionTask(Task):
    name = "extraction"
    Settings = ExtractionSettings
    quality_name = "exact object match"
    support_check = "ungrounded"

    def __init__(self, settings: ExtractionSettings) -> None:  # type: ignore[override]
        from jsonschema import Draft202012Validator

        super().__init__(settings)
        self.settings: ExtractionSettings = settings
        self.schema = settings.schema()
        self.fields = list(self.schema["properties"])
        self.validator = Draft202012Validator(self.schema)
        self.placeholders = {value.strip().casefold() for value in settings.placeholder_values}

    def system_prompt(self) -> str:
        """The fields in schema order, then the answer's layout exactly as the constraint allows it. A raw JSON
        schema in the prompt made the teacher echo the schema instead of answering (20 of 32 rows, unconstrained)."""
        fields = [f"- {key}: {_describe(spec)}" for key, spec in self.schema["properties"].items()]
        item, between = JSON_SEPARATORS.get(self.settings.json_layout, JSON_SEPARATORS["spaced"])
        layout = "{" + item.join(f'"{key}"{between}...' for key in self.fields) + "}"
        return (f"{self.settings.instruction.strip()}\n\nReply with one JSON object and nothing else. Its fields, "
                "in this order:\n" + "\n".join(fields) + "\nWrite it on one line, laid out like this, with null for "
                f"a field the text does not give:\n{layout}")

    def teacher_constraint(self, rationale: bool = False) -> dict[str, Any]:
        """The schema as a grammar that also fixes the layout, so the teacher writes JSON the way it would
        unconstrained: `compact` (no spaces) forbids the space token a model writes after `:` and made
        Qwen2.5-Coder-1.5B write null for values it gives otherwise (bench/constraint_fidelity.py)."""
        if self.settings.json_layout == "free":
            return {"json": self.schema}
        return {"grammar": json_grammar(self.schema, JSON_SEPARATORS[self.settings.json_layout])}

    def student_constraint(self) -> dict[str, Any]:
        # The student learns canonical compact JSON, and its server's compact_json flag keeps it to that layout.
        return {"json": self.schema}

    def parse(self, raw: str | None, rationale: bool = False) -> Parsed:
        if raw is None:
            return Parsed(None, "no output")
        try:
            obj = _loads(raw)
        except json.JSONDecodeError as exc:
            return Parsed(None, f"not valid JSON: {exc.msg} at {exc.pos}")
        placeholders = self._placeholder_keys(obj)
        if placeholders and self.settings.placeholders == "invalid":
            return Parsed(None, f"a placeholder, not a value, at {', '.join(placeholders)} (task.placeholders)")
        obj = {k: v for k, v in obj.items() if k not in placeholders} if placeholders else obj
        error = next(iter(sorted(self.validator.iter_errors(obj), key=lambda e: e.path)), None)
        if error is not None:
            where = "/".join(map(str, error.absolute_path)) or "the object"
            return Parsed(None, f"against the schema at {where}: {error.message[:120]}")
        return Parsed(self.canonical(obj), None)

    def _placeholder_keys(self, obj: Any) -> list[str]:
        """Top-level fields holding a placeholder string (one the field's own `enum` does not list)."""
        if not isinstance(obj, dict):
            return []
        properties = self.schema["properties"]
        return [key for key, value in obj.items() if isinstance(value, str) and value.strip().casefold()
                in self.placeholders and value not in properties.get(key, {}).get("enum", ())]

    def part_matches(self, answer: str | None, reference: str) -> list[bool]:
        return self._field_matches(answer, reference)

    def placeholder_fields(self, raw: str | None) -> list[str]:
        try:
            return self._placeholder_keys(_loads(raw)) if raw is not None else []
        except json.JSONDecodeError:
            return []

    def canonical(self, obj: dict[str, Any]) -> str:
        known = [key for key in self.fields if obj.get(key) is not None]
        others = sorted(key for key in obj if key not in self.schema["properties"] and obj[key] is not None)
        return json.dumps({key: obj[key] for key in known + others}, ensure_ascii=False, separators=(",", ":"))

    def _field_matches(self, prediction: str | None, gold: str) -> list[bool]:
        truth = json.loads(gold)
        guess = json.loads(prediction) if prediction is not None else None
        if guess is None:
            return [False] * len(self.fields)
        return [_same(guess.get(key), truth.get(key)) for key in self.fields]

    def score(self, prediction: str | None, gold: str) -> float:
        return float(prediction is not None and all(self._field_matches(prediction, gold)))

    def agree(self, first: str | None, second: str | None) -> float:
        return float(first is not None and second is not None and all(self._field_matches(first, second)))

    def details(self, predictions: Sequence[str | None], gold: Sequence[str | None]) -> dict[str, Any]:
        """Per-field accuracy; and how the model does where the text has nothing to extract."""
        pairs = [(p, g) for p, g in zip(predictions, gold, strict=True) if g is not None]
        if not pairs:
            return {"field_accuracy": None, "per_field": {}}
        matches = [self._field_matches(p, g) for p, g in pairs]
        per_field = {key: sum(m[i] for m in matches) / len(matches) for i, key in enumerate(self.fields)}
        empty = [p for p, g in pairs if json.loads(g) == {}]
        return {
            "field_accuracy": sum(per_field.values()) / len(per_field),
            "per_field": per_field,
            "empty_gold_rows": len(empty),
            "empty_answered_empty": sum(p == "{}" for p in empty) / len(empty) if empty else None,
        }

    def categories(self, value: str) -> list[str]:
        return list(json.loads(value)) or ["(empty)"]

    def unsupported(self, value: str, text: str, exempt: Sequence[str] = (),
                    min_similarity: float | None = None) -> list[Finding]:
        """String values that do not occur in the input (grounding.py); enums and `exempt` fields excepted."""
        return FieldRules(self.schema, tuple(exempt), min_similarity).ungrounded(json.loads(value), text)

    def field_names(self) -> str:
        return ", ".join(sorted(field_paths(self.schema)))

    def unknown_fields(self, names: Sequence[str]) -> list[str]:
        paths = field_paths(self.schema)
        return [name for name in names if name not in paths]
