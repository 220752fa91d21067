"""The base of every config model: unknown keys are errors, values frozen, paths resolved from the config's folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from distill.errors import UserError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        """`epochs: true` is a slip, not 1: pydantic's lax mode would take a bool for a number."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if bool not in {annotation, *get_args(annotation)} and annotation is not Any:
                raise ValueError(f"{str(value).lower()} is not {_kind(annotation)}")
        return value


def _kind(annotation: Any) -> str:
    kinds = {annotation, *get_args(annotation)}
    return "a number" if kinds & {int, float} else "accepted here (this key is not a true/false switch)"


def resolve_existing(value: Path | None, info: ValidationInfo) -> Path | None:
    if value is None:
        return None
    base = Path((info.context or {}).get("base_dir", "."))
    path = (base / value).resolve() if not value.is_absolute() else value
    if not path.exists():
        raise ValueError(f"file not found: {path} (paths are relative to the config file's folder)")
    return path


def read_json_file(path: Path, key: str, what: str) -> Any:
    """A JSON file a config key points to; an unreadable one is a `UserError` naming the file and the key."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read {what} ({key}): {exc}") from exc
