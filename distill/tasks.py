"""What a task type decides: the teacher's prompt and output constraint, parsing, and the student's format."""

from __future__ import annotations

from dataclasses import dataclass

from distill.config import TaskConfig


@dataclass(frozen=True)
class Parsed:
    value: str | None
    error: str | None


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

    def teacher_messages(self, text: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": text}]

    def teacher_constraint(self) -> dict:
        return {"choice": self.labels}

    def parse(self, raw: str | None) -> Parsed:
        if raw is None:
            return Parsed(None, "no output")
        value = raw.strip()
        if value in self._label_set:
            return Parsed(value, None)
        return Parsed(None, f"not in the label set: {value[:80]!r}")

    def student_prompt(self, text: str) -> str:
        return self.config.student_prompt.format(text=text)

    def student_target(self, value: str) -> str:
        # A leading space keeps the answer's tokens the same as where it follows "Label:" in running text.
        return " " + value

    def student_constraint(self) -> dict:
        return {"choice": [self.student_target(label) for label in self.labels]}


def make_task(config: TaskConfig) -> ClassificationTask:
    return ClassificationTask(config)
