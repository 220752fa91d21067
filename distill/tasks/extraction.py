"""Extraction: one JSON object per input, valid against a JSON schema from the config.

The schema constrains decoding for teacher and student alike. An answer is canonical as compact JSON with the
schema's properties in schema order and unmentioned fields left out (null and absent mean the same: "not in
the text"), so an empty object is a real answer: "nothing to extract". Fields compare exactly after trimming
whitespace and ignoring case.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from distill.errors import UserError
from distill.strict import read_json_file, resolve_existing
from distill.tasks.base import Parsed, Task, TaskSettings


class ExtractionSettings(TaskSettings):
    type: Literal["extraction"]
    json_schema: dict[str, Any] | None = Field(None, description="JSON schema of one answer object, inline.")
    json_schema_file: Path | None = Field(None, description="A JSON schema file, instead of `json_schema`.")
    student_prompt: str = "{text}\nJSON:\n"

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


def _same(first: Any, second: Any) -> bool:
    if isinstance(first, str) and isinstance(second, str):
        return first.strip().casefold() == second.strip().casefold()
    return first == second


class ExtractionTask(Task):
    name = "extraction"
    Settings = ExtractionSettings
    quality_name = "exact object match"

    def __init__(self, settings: ExtractionSettings) -> None:  # type: ignore[override]
        from jsonschema import Draft202012Validator

        super().__init__(settings)
        self.settings: ExtractionSettings = settings
        self.schema = settings.schema()
        self.fields = list(self.schema["properties"])
        self.validator = Draft202012Validator(self.schema)

    def system_prompt(self) -> str:
        return (f"{self.settings.instruction.strip()}\n\nReply with one JSON object that follows this JSON schema; "
                "leave out fields the text does not give, or set them to null.\n"
                + json.dumps(self.schema, ensure_ascii=False))

    def teacher_constraint(self, rationale: bool = False) -> dict[str, Any]:
        return {"json": self.schema}

    def parse(self, raw: str | None, rationale: bool = False) -> Parsed:
        if raw is None:
            return Parsed(None, "no output")
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            return Parsed(None, f"not valid JSON: {exc.msg} at {exc.pos}")
        error = next(iter(sorted(self.validator.iter_errors(obj), key=lambda e: e.path)), None)
        if error is not None:
            where = "/".join(map(str, error.absolute_path)) or "the object"
            return Parsed(None, f"against the schema at {where}: {error.message[:120]}")
        return Parsed(self.canonical(obj), None)

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
