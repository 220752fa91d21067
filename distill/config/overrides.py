"""`--set section.key=value`: one assignment applied to a raw config mapping, its key checked against the schema
and its value typed as the field expects."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from distill.config.schema import Config
from distill.errors import UserError
from distill.strict import nearest_key
from distill.tasks import DEFAULT_TYPE, REGISTRY


def section_model(annotation: Any, raw_section: Any, name: str) -> type[BaseModel] | None:
    """The config model a key's value is validated with; None for a plain value or a free mapping."""
    if name == "task":  # a tagged union: the keys are those of the type the config names
        tag = raw_section.get("type", DEFAULT_TYPE) if isinstance(raw_section, dict) else DEFAULT_TYPE
        return REGISTRY[tag].Settings if tag in REGISTRY else None
    for arg in (annotation, *get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _leaf_value(annotation: Any, text: str) -> Any:
    """A `--set` value typed as YAML would type it, except that a text or path field keeps the text as given
    (so `name=007` stays a name) and a relative path is taken from the working directory, as a shell user means."""
    kinds = {annotation, *get_args(annotation)}
    if Path in kinds and text not in ("null", "~"):
        return str(Path(text).expanduser().resolve())
    if str in kinds and not kinds & {int, float, bool, list, dict} and text not in ("null", "~"):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(raw: dict[str, Any], assignment: str) -> str:
    """Apply one `section.key=value` to a raw config mapping; returns the dotted key. A key the schema does not
    have is a `UserError` naming the nearest valid key."""
    key, sep, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise UserError(f"--set {assignment!r}: write it as section.key=value, e.g. student.epochs=1")
    model: type[BaseModel] | None = Config
    node = raw
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        if model is None:  # inside a free mapping (variants, a JSON schema): any key goes
            annotation: Any = Any
        elif part not in model.model_fields:
            close = nearest_key(part, model.model_fields)
            hint = (f"; did you mean {'.'.join([*parts[:depth], close])}?" if close
                    else f"; the keys here are {', '.join(model.model_fields)}")
            raise UserError(f"--set {key}: unknown key {here!r}{hint}")
        else:
            annotation = model.model_fields[part].annotation
        if depth == len(parts) - 1:
            node[part] = _leaf_value(annotation, text.strip())
            return key
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"--set {key}: {here} is a value, not a section")
        model = section_model(annotation, child, part) if model is not None else None
        node = child
    return key

