"""The base of every config model: unknown keys are errors, values frozen, paths resolved from the config's folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo

from distill.errors import UserError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
