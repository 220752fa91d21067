"""Reading a config file: its YAML, `--set` overrides applied, then validated, every problem reported at once
with its YAML path (and the nearest valid key to a misspelt one)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from distill.config.overrides import apply_override, section_model
from distill.config.schema import Config
from distill.errors import UserError
from distill.strict import nearest_key, read_yaml
from distill.tasks import REGISTRY


def _format_errors(path: Path, error: ValidationError, raw: dict[str, Any], overridden: Sequence[str] = ()) -> str:
    lines = []
    for item in error.errors():
        loc = [part for i, part in enumerate(item["loc"]) if not (i == 1 and item["loc"][0] == "task"
                                                                  and part in REGISTRY)]  # the type's tag
        key = ".".join(str(part) for part in loc) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key" + _suggestion(raw, loc)
        origin = " (given with --set)" if any(key == o or key.startswith(o + ".") for o in overridden) else ""
        lines.append(f"{path}: {key}: {message}{origin}")
    return "\n".join(lines)


def _suggestion(raw: dict[str, Any], loc: list[Any]) -> str:
    """`; did you mean data.test?` for an unknown key at `loc`, as `--set` says it."""
    model: type[BaseModel] | None = Config
    node: Any = raw
    for part in loc[:-1]:
        if model is None or part not in model.model_fields or not isinstance(node, dict):
            return ""
        node = node.get(part)
        model = section_model(model.model_fields[part].annotation, node, str(part))
    close = nearest_key(str(loc[-1]), model.model_fields) if model is not None else None
    return (f"; did you mean {'.'.join(map(str, [*loc[:-1], close]))}?" if close
            else " (check its spelling against the documented keys)")



def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read and validate a study config, with `section.key=value` overrides applied first (the result is the
    effective config: what manifests record and keys hash); raise `UserError` listing every problem."""
    path = Path(path).resolve()
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config must be a YAML mapping with keys name, task, data, teacher, ...")
    changed = [apply_override(raw, item) for item in overrides]
    try:
        return Config.model_validate(raw, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise UserError(_format_errors(path, exc, raw, changed)) from exc
