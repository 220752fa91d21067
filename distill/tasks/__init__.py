"""Task types. Each module here defines one (see base.Task): its config keys, teacher prompt and constraint,
parsing, student format and metrics. A new type is one new module and one line in `REGISTRY`."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from distill.tasks.base import Parsed, Task, TaskSettings
from distill.tasks.classification import ClassificationTask
from distill.tasks.extraction import ExtractionTask
from distill.tasks.generation import GenerationTask

REGISTRY: dict[str, type[Task]] = {task.name: task for task in (ClassificationTask, ExtractionTask, GenerationTask)}

DEFAULT_TYPE = "classification"


def _type_of(value: Any) -> str:
    return (value.get("type", DEFAULT_TYPE) if isinstance(value, dict) else getattr(value, "type", DEFAULT_TYPE))


def settings_union() -> Any:
    """The `task` section's schema: the settings of whichever type its `type` key names."""
    choices = tuple(Annotated[cls.Settings, Tag(name)] for name, cls in REGISTRY.items())
    unknown = f"unknown task type; give `type` as one of {', '.join(map(repr, REGISTRY))}"
    return Annotated[Union[choices], Discriminator(  # noqa: UP007 (a runtime-built union)
        _type_of, custom_error_type="unknown_task_type", custom_error_message=unknown)]


def make_task(settings: TaskSettings) -> Task:
    return REGISTRY[settings.type](settings)


__all__ = ["Parsed", "Task", "TaskSettings", "make_task", "settings_union"]
