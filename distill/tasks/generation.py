"""Generation: free text in one fixed format (a summary, a reply), checked by a regular expression.

Where `format_regex` is given it constrains decoding for teacher and student, and an output that does not
match it whole is invalid. Quality against a reference is ROUGE-L F1 (Google's rouge-score, stemmed); two
models agree by the same measure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, field_validator

from distill.tasks.base import Parsed, Task, TaskSettings
from distill.tasks.grounding import Finding, unsupported_tokens

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class GenerationSettings(TaskSettings):
    type: Literal["generation"]
    format_regex: str | None = Field(
        None, description="The whole output must match this (no ^ or $: it is matched whole, and it constrains "
        "decoding); null: any non-empty text.")
    student_prompt: str = "{text}\nSummary:\n"

    @field_validator("format_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("^") or value.endswith("$"):
            raise ValueError("leave out ^ and $: the whole output is matched anyway")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class GenerationTask(Task):
    name = "generation"
    Settings = GenerationSettings
    quality_name = "ROUGE-L F1"
    binary_score = False
    support_check = "unsupported"

    def __init__(self, settings: GenerationSettings) -> None:  # type: ignore[override]
        super().__init__(settings)
        self.settings: GenerationSettings = settings
        self.pattern = re.compile(settings.format_regex, re.DOTALL) if settings.format_regex else None

    @cached_property
    def scorer(self) -> Any:
        from rouge_score.rouge_scorer import RougeScorer

        return RougeScorer(list(ROUGE_TYPES), use_stemmer=True)

    def system_prompt(self) -> str:
        return self.settings.instruction.strip()

    def teacher_constraint(self, rationale: bool = False) -> dict[str, Any] | None:
        return {"regex": self.settings.format_regex} if self.settings.format_regex else None

    def parse(self, raw: str | None, rationale: bool = False) -> Parsed:
        if raw is None or not raw.strip():
            return Parsed(None, "no output")
        text = raw.strip()
        if self.pattern is not None and not self.pattern.fullmatch(text):
            return Parsed(None, f"does not match task.format_regex: {text[:80]!r}")
        return Parsed(text, None)

    def parse_gold(self, raw: str) -> str:
        # A reference need not follow the output format; it only has to exist.
        if not raw.strip():
            raise ValueError("empty reference text")
        return raw.strip()

    def score(self, prediction: str | None, gold: str) -> float:
        if prediction is None:
            return 0.0
        return self.scorer.score(gold, prediction)["rougeL"].fmeasure

    def agree(self, first: str | None, second: str | None) -> float:
        if first is None or second is None:
            return 0.0
        return self.scorer.score(second, first)["rougeL"].fmeasure

    def unsupported(self, value: str, text: str, exempt: Sequence[str] = (),
                    min_similarity: float | None = None) -> list[Finding]:
        """Numbers and capitalised names in the answer that the input never writes."""
        return [Finding("answer", token) for token in unsupported_tokens(value, text)]

    def details(self, predictions: Sequence[str | None], gold: Sequence[str | None]) -> dict[str, Any]:
        pairs = [(p, g) for p, g in zip(predictions, gold, strict=True) if g is not None]
        if not pairs:
            return {}
        scores = [self.scorer.score(g, p) if p is not None else None for p, g in pairs]
        return {name: sum(s[name].fmeasure for s in scores if s is not None) / len(pairs) for name in ROUGE_TYPES}
