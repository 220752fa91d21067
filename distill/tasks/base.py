"""What every task type decides; `distill/tasks/__init__.py` lists the types by their config names.

A task's answer travels between stages as one canonical string (a label, a compact JSON list or object, a text),
so generate, filter, train and compare store and compare answers without knowing the type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, field_validator

from distill.strict import Strict
from distill.tasks.grounding import Finding


@dataclass(frozen=True)
class Parsed:
    value: str | None  # canonical answer, None when the output is invalid
    error: str | None
    rationale: str | None = None


class TaskSettings(Strict):
    """Keys every task type has; each type adds its own."""

    type: str
    instruction: str = Field(description="What the teacher is asked to do.")
    student_prompt: str = Field("{text}\nAnswer:\n", description="The student's short prompt; `{text}` is "
                                "replaced by the input.")

    def content(self) -> dict[str, Any]:
        """The settings as the stages use them; a type with side files puts their content in their place."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    @field_validator("student_prompt")
    @classmethod
    def _has_text_slot(cls, value: str) -> str:
        if "{text}" not in value:
            raise ValueError("must contain the placeholder {text}")
        try:  # as `student_prompt()` fills it at train time, so a stray brace fails here and not hours later
            value.format(text="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"braces other than {{text}} ({type(exc).__name__}: {exc}); write a literal brace "
                             "as {{ or }}") from None
        return value


class Task:
    """One task type. Subclasses set `name` and `Settings`, and are registered by defining them."""

    name: ClassVar[str]
    Settings: ClassVar[type[TaskSettings]]
    quality_name: str = "accuracy"  # what `score` measures, for reports
    binary_score: ClassVar[bool] = True  # per-row scores are 0 or 1, so a paired exact test applies
    supports_rationale: ClassVar[bool] = False
    single_label: bool = False  # answers are one label each (per-label caps, confusion matrix)
    # The filter's check that an answer is supported by its input, named by its drop reason (None: no check).
    support_check: ClassVar[str | None] = None

    def __init__(self, settings: TaskSettings) -> None:
        self.settings = settings
        self.labels: list[str] | None = None

    # The teacher's side.
    def system_prompt(self) -> str:
        raise NotImplementedError

    def teacher_messages(self, text: str, rationale: bool = False) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system_prompt()}, {"role": "user", "content": text}]

    def teacher_constraint(self, rationale: bool = False) -> dict[str, Any] | None:
        """vLLM `structured_outputs` for the teacher's answer; None lets it write freely."""
        raise NotImplementedError

    def answer_token_budget(self, max_tokens: int, rationale: bool = False) -> int:
        return max_tokens

    def parse(self, raw: str | None, rationale: bool = False) -> Parsed:
        raise NotImplementedError

    def parse_gold(self, raw: str) -> str:
        """A gold answer in canonical form; ValueError says what is wrong with it."""
        parsed = self.parse(raw)
        if parsed.value is None:
            raise ValueError(parsed.error)
        return parsed.value

    # The student's side: the same prompt and target in training, serving and compare.
    def student_prompt(self, text: str) -> str:
        return self.settings.student_prompt.format(text=text)

    def student_target(self, value: str) -> str:
        return value

    def student_constraint(self) -> dict[str, Any] | None:
        return self.teacher_constraint()

    # Quality.
    def score(self, prediction: str | None, gold: str) -> float:
        """Quality of one answer against gold, in [0, 1]; an invalid answer scores 0."""
        return float(prediction is not None and prediction == gold)

    def agree(self, first: str | None, second: str | None) -> float:
        """How far two models' answers agree, in [0, 1]; an invalid answer agrees with nothing."""
        return float(first is not None and first == second)

    def details(self, predictions: Sequence[str | None], gold: Sequence[str | None]) -> dict[str, Any]:
        """Type-specific quality numbers over the rows with gold (per class, per field, ROUGE...)."""
        return {}

    def part_matches(self, answer: str | None, reference: str) -> list[bool]:
        """Which parts of an answer equal a reference's (each field of a JSON object, else the whole answer);
        the constraint-fidelity check compares constrained and unconstrained answers by this."""
        return [answer == reference]

    def placeholder_fields(self, raw: str | None) -> list[str]:
        """Fields of a raw answer that hold a placeholder ("null", "N/A") where a value belongs; reports count them."""
        return []

    def unsupported(self, value: str, text: str, exempt: Sequence[str] = (),
                    min_similarity: float | None = None) -> list[Finding]:
        """Parts of an answer that its input does not support (`support_check`); `exempt` names fields not checked."""
        return []

    def field_names(self) -> str:
        """The answer's fields, for messages ("none" where answers have no fields)."""
        return "none"

    def unknown_fields(self, names: Sequence[str]) -> list[str]:
        """Of `names`, those that are not fields of an answer."""
        return list(names)

    def categories(self, value: str) -> list[str]:
        """What a filter report counts per answer (labels, filled fields); empty where counting means nothing."""
        return []
