"""The base of every config model: unknown keys are errors, values frozen, paths resolved from the config's folder."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationInfo


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
