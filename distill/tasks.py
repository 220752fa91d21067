"""What a task type decides: the teacher's prompt and output constraint, parsing, and the student's format."""

from __future__ import annotations

import json
from dataclasses import dataclass

from distill.config import TaskConfig


@dataclass(frozen=True)
class Parsed:
    value: str | None
    error: str | None
    rationale: str | None = None


RATIONALE_INSTRUCTION = (
    "\n\nReply with a JSON object: first a short 'rationale' (one or two sentences on why), then the 'label'."
)


class ClassificationTask:
    """One label per input, chosen from a fixed set; the label set is enforced by choice-constrained decoding."""

    def __init__(self, config: TaskConfig) -> None:
        self.config = config
        self.labels = config.label_set()
        self._label_set = set(self.labels)
        # The instruction and label list come first and are identical for every row, so vLLM's prefix
        # cache serves them after the first request.
        self.system_prompt = (
            f"{config.instruction.strip()}\n\nAllowed labels:\n" + "\n".join(self.labels)
            + "\n\nAnswer with exactly one label from the list and nothing else."
        )

    def teacher_messages(self, text: str, rationale: bool = False) -> list[dict[str, str]]:
        system = self.system_prompt + (RATIONALE_INSTRUCTION if rationale else "")
        return [{"role": "system", "content": system}, {"role": "user", "content": text}]

    def teacher_constraint(self, rationale: bool = False) -> dict:
        if not rationale:
            return {"choice": self.labels}
        # "rationale" comes first in the object, so the teacher explains before it commits to a label.
        return {"json": {"type": "object", "additionalProperties": False, "required": ["rationale", "label"],
                         "properties": {"rationale": {"type": "string", "maxLength": 300},
                                        "label": {"enum": self.labels}}}}

    def answer_token_budget(self, max_tokens: int, rationale: bool = False) -> int:
        """Never cut a label short: sampled under a choice constraint, a label may be spelt in as many tokens as
        it has characters, and the constraint ends generation anyway."""
        if rationale:
            return max_tokens
        return max(max_tokens, max(len(label) for label in self.labels) + 1)

    def parse(self, raw: str | None, rationale: bool = False) -> Parsed:
        if raw is None:
            return Parsed(None, "no output")
        if rationale:
            return self._parse_with_rationale(raw)
        value = raw.strip()
        if value in self._label_set:
            return Parsed(value, None)
        return Parsed(None, f"not in the label set: {value[:80]!r}")

    def _parse_with_rationale(self, raw: str) -> Parsed:
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            return Parsed(None, f"not valid JSON: {exc.msg} at {exc.pos}")
        if not isinstance(obj, dict) or not isinstance(obj.get("rationale"), str):
            return Parsed(None, "JSON without a string 'rationale'")
        label = self.parse(str(obj.get("label")))
        return Parsed(label.value, label.error, obj["rationale"])

    def student_prompt(self, text: str) -> str:
        return self.config.student_prompt.format(text=text)

    def student_target(self, value: str) -> str:
        # A leading space keeps the answer's tokens the same as where it follows "Label:" in running text.
        return " " + value

    def student_constraint(self) -> dict:
        return {"choice": [self.student_target(label) for label in self.labels]}


def make_task(config: TaskConfig) -> ClassificationTask:
    return ClassificationTask(config)
