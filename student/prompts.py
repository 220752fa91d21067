"""The student's prompt, built one way for training, evaluation, serving and compare alike."""

from __future__ import annotations

from typing import Any

from distill.config import StudentConfig
from distill.errors import UserError
from distill.models import resolve_model
from distill.tasks import Task


class StudentPrompter:
    """plain: the task's short prompt as it is (base models). chat: that prompt as a user turn in the student's
    own chat template, ending where the assistant's answer starts."""

    def __init__(self, task: Task, student: StudentConfig, tokenizer: Any | None = None) -> None:
        self.task = task
        self.tokenizer = None
        if student.prompt_format == "chat":
            if tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(resolve_model(student.model))
            if not getattr(tokenizer, "chat_template", None):
                raise UserError(f"student.prompt_format: chat, but {student.model} has no chat template; "
                                "use prompt_format: plain")
            self.tokenizer = tokenizer

    def __call__(self, text: str) -> str:
        return self.wrap(self.task.student_prompt(text))

    def wrap(self, prompt: str) -> str:
        """A filled prompt as the student sees it (also the rationale task's, student/rationale.py)."""
        if self.tokenizer is None:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)
