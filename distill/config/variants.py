"""The variant algebra of a study: a variant is the main config with some keys of `student`, `filter` and
`teacher` (samples, temperature) overridden; each is checked, and built, from the main sections' own keys."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from distill.config.labels import FilterConfig, TeacherConfig
from distill.config.student import StudentConfig

if TYPE_CHECKING:
    from distill.config.schema import Config

# A run folder's name (runs/<name>, variants/<name>): no path separators, and not `.`, `..` or a hidden folder.
FOLDER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

# Teacher settings a study variant may change: they change how the labels are made, not the teacher that every
# student is compared with (compare asks it once, greedily), so all variants stay in one table.
VARIANT_TEACHER_KEYS = ("samples", "temperature")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


def split_variant(override: dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
    """A variant's student keys, its `filter` keys and its `teacher` keys (StudentConfig has neither key, so
    none is shadowed)."""
    return ({k: v for k, v in override.items() if k not in ("filter", "teacher")}, override.get("filter", {}),
            override.get("teacher", {}))


def check_variant(name: str, override: dict[str, Any], bases: dict[str, BaseModel | None]) -> None:
    """Raise `ValueError` naming what is wrong with variant `name`, whose keys override `bases` (the main
    config's filter, teacher and student sections; None for one that is itself invalid, reported on its own)."""
    if not re.fullmatch(FOLDER_NAME, name) or name == "main" or name.startswith("labels-"):
        raise ValueError(f"variant name {name!r}: use letters, digits, '_', '.', '-', starting with a letter "
                         "or digit (and not 'main' or 'labels-...', which name the learning curve's points)")
    student_keys, filter_keys, teacher_keys = split_variant(override)
    for section, keys in (("filter", filter_keys), ("teacher", teacher_keys)):
        if not isinstance(keys, dict):
            raise ValueError(f"variant {name!r}: `{section}` must map keys of `{section}` to values, not "
                             f"{keys!r}")
    if other := sorted(set(teacher_keys) - set(VARIANT_TEACHER_KEYS)):
        raise ValueError(f"variant {name!r} overrides teacher.{', teacher.'.join(other)}: a variant may "
                         f"change only teacher.{' and teacher.'.join(VARIANT_TEACHER_KEYS)} (how labels are "
                         "made); another teacher is another study, in a run folder of its own")
    sections = (("filter", FilterConfig, filter_keys), ("teacher", TeacherConfig, teacher_keys),
                ("student", StudentConfig, student_keys))
    for section, model, keys in sections:
        base = bases.get(section)
        if base is None:
            continue
        try:
            model.model_validate(deep_merge(base.model_dump(), keys))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or section}: "
                                 f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
            raise ValueError(f"variant {name!r} overrides {section} with {problems}") from None


def variant_config(config: Config, name: str) -> Config:
    """`config` with the student (filter, labelling settings) of variant `name`, and no variants of its own."""
    # Built from the keys the config sets, so what it leaves to defaults stays as the main student has it
    # (an unvalidated default 900 would come back 900.0 and change the variant's stage keys).
    student_keys, filter_keys, teacher_keys = split_variant(config.variants[name])
    student = StudentConfig.model_validate(deep_merge(config.student.model_dump(exclude_unset=True), student_keys))
    filters = FilterConfig.model_validate(deep_merge(config.filter.model_dump(exclude_unset=True), filter_keys))
    teacher = (TeacherConfig.model_validate(deep_merge(config.teacher.model_dump(exclude_unset=True), teacher_keys))
               if teacher_keys else config.teacher)
    return config.model_copy(update={"student": student, "filter": filters, "teacher": teacher, "variants": {}})
