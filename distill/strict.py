"""The base of every config model: unknown keys are errors, values frozen, paths resolved from the config's folder;
and reading a config file: its text, its YAML, and the nearest valid key to a misspelt one.

Every way a config file can be unreadable (a folder, not UTF-8, bad YAML, a key given twice) is a `UserError`
naming the file, and the line where there is one: PyYAML itself keeps the last of two equal keys silently.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, get_args

import yaml
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


class _RepeatedKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a mapping key given twice, at the line of its second occurrence."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _RepeatedKey(f"line {line}: key {key!r} given twice (first on line {seen[key]}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """The YAML document in a config file; a `UserError` naming the file says why it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UserError(f"{path}: config file not found") from exc
    except IsADirectoryError as exc:
        raise UserError(f"{path}: is a folder; give -c the config file (a .yaml file) inside it") from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}: line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); re-save the "
                        "config as UTF-8") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read the config ({exc.strerror})") from exc
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _RepeatedKey as exc:
        raise UserError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from exc


def nearest_key(word: str, keys: Iterable[str]) -> str | None:
    """The valid key a misspelt one most likely means: one it extends with a suffix or prefix (`test_file`,
    `inputs_path`, `model_name`) first, else the closest by spelling; None if nothing is close."""
    keys = list(keys)
    extended = [k for k in keys if word.startswith(k + "_") or word.endswith("_" + k)]
    if extended:
        return max(extended, key=len)
    close = difflib.get_close_matches(word, keys, n=1)
    return close[0] if close else None
