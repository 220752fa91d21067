"""Model references checked before anything is paid for: `validate` and `distill run` refuse a teacher or
student that no stage could load, instead of failing at train after every label is bought (or retrying a
misspelt hub id for a minute).

A reference is good if it is a local folder, a .gguf file, a catalogue name (`distill models list`) or a hub id
already in the local Hugging Face cache (machines here have no hub; a hub user downloads it first).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from distill.config import Config
from distill.errors import UserError
from distill.models import CATALOGUE


def model_problem(ref: str, key: str) -> str | None:
    """Why `ref` (given at config key `key`) names no model a stage could load, and what to give instead."""
    path = Path(ref).expanduser()
    if path.is_dir() or (path.suffix == ".gguf" and path.is_file()) or ref in CATALOGUE:
        return None
    if path.suffix == ".gguf":
        return f"{key}: {ref}: GGUF file not found"
    if ref.startswith((".", "/", "~")) or path.is_absolute():
        return f"{key}: {ref}: model folder not found; give an existing folder, a .gguf file or a catalogue name"
    if _in_hub_cache(ref):
        return None
    close = difflib.get_close_matches(ref, list(CATALOGUE), n=1)
    hint = f"did you mean {close[0]}?" if close else f"catalogue names: {', '.join(CATALOGUE)}"
    return (f"{key}: {ref!r} is not a local folder, a .gguf file, a catalogue name or a hub id in the local Hugging "
            f"Face cache; {hint} (a hub id: `huggingface-cli download {ref}` first)")


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id at all
        return False


def model_problems(config: Config) -> list[str]:
    """Every model the config names that no stage could load: the teacher (unless served at `teacher.url`, where
    the name is the endpoint's), the student, and each variant's student."""
    refs = {} if config.teacher.url else {"teacher.model": config.teacher.model}
    refs["student.model"] = config.student.model
    for name in config.variants:
        if (ref := config.variant(name).student.model) != config.student.model:
            refs[f"variants.{name}.model"] = ref
    return [problem for key, ref in refs.items() if (problem := model_problem(ref, key))]


def check_models(config: Config) -> None:
    """`UserError` listing every model of the config that no stage could load."""
    problems = model_problems(config)
    if problems:
        raise UserError("\n".join(problems))
