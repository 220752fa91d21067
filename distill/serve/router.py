"""Who answers one input: the student, the teacher, the student unless unsure (cascade), or one of them while
both are asked (shadow). Answers are parsed and validated by the task as generate and compare do; a student
answer outside the label set or the schema is never served by a cascade."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from distill.compare.cascade import confidences
from distill.config import Config
from distill.serve.backends import Backend, Reply
from distill.serve.plan import Plan
from distill.tasks import Task
from student.prompts import StudentPrompter
from student.serve import student_request
from teacher.protocol import teacher_request

TEACHER_DOWN = "teacher unavailable: the student's answer is served in its place"
STUDENT_DOWN = "student unavailable: the teacher's answer is served in its place"


@dataclass
class Asked:
    """One backend's answer to one input, parsed."""

    reply: Reply
    value: str | None  # the canonical answer, None where invalid or failed
    confidence: float | None = None

    def record(self) -> dict[str, Any]:
        answer = self.reply.answer
        return {"answer": self.value, "raw": answer.text, "error": answer.error, "confidence": self.confidence,
                "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                "latency_ms": answer.latency_ms}


@dataclass
class Outcome:
    answered_by: str | None  # "student", "teacher", or None where no answer could be given
    content: str | None
    student: Asked | None = None
    teacher: Asked | None = None
    escalated: str | None = None  # why a cascade asked the teacher: invalid, low_confidence, student_failed
    warnings: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> Asked | None:
        return {"student": self.student, "teacher": self.teacher}.get(self.answered_by or "")

    @property
    def degraded(self) -> bool:
        return TEACHER_DOWN in self.warnings


@dataclass
class Pending:
    """A request whose answer the teacher is to stream: the student's answer and why it was not enough."""

    student: Asked | None
    escalated: str | None


class Router:
    def __init__(self, config: Config, task: Task, plan: Plan, student: Backend | None, teacher: Backend | None
                 ) -> None:
        from distill.compare.stage import reference_teacher

        self.config, self.task, self.plan = config, task, plan
        self.student, self.teacher = student, teacher
        # The teacher answers as compare asked it (greedily, once): the answers the cascade was measured with.
        self.teacher_config = reference_teacher(config.teacher)
        self.prompter = StudentPrompter(task, config.student) if student is not None else None

    async def ask_student(self, text: str) -> Asked:
        assert self.student is not None and self.prompter is not None
        reply = await self.student.ask(student_request(self.task, self.config, self.prompter(text)))
        value = None if reply.failed else self.task.parse(reply.answer.text).value
        kind = self.plan.confidence or "mean_token_logprob"
        score = float(confidences([reply.answer], [value])[kind][0])
        return Asked(reply, value, score if score > float("-inf") else None)

    def teacher_request(self, text: str) -> dict[str, Any]:
        return teacher_request(self.task, self.teacher_config, text)

    def teacher_asked(self, reply: Reply) -> Asked:
        value = None if reply.failed else self.task.parse(reply.answer.text, self.teacher_config.rationale).value
        return Asked(reply, value)

    async def ask_teacher(self, text: str) -> Asked:
        assert self.teacher is not None
        return self.teacher_asked(await self.teacher.ask(self.teacher_request(text)))

    async def before_teacher(self, text: str) -> Outcome | Pending:
        """A streamed request (teacher and cascade modes): the outcome where the teacher is not needed, else what
        is known before the teacher's answer is streamed through."""
        if self.plan.mode != "cascade":
            return Pending(None, None)
        student = await self.ask_student(text)
        reason = self._escalation(student)
        return Outcome("student", student.value, student=student) if reason is None else Pending(student, reason)

    def after_teacher(self, pending: Pending, teacher: Asked) -> Outcome:
        """The outcome once the teacher answered, or failed, what the student did not settle."""
        if teacher.reply.failed:
            return self._teacher_down(pending.student, teacher, pending.escalated)
        return Outcome("teacher", content_of(teacher), pending.student, teacher, pending.escalated)

    async def route(self, text: str) -> Outcome:
        mode = self.plan.mode
        if mode == "student":
            return _alone("student", await self.ask_student(text))
        if mode == "teacher":
            return _alone("teacher", await self.ask_teacher(text))
        if mode == "shadow":
            return self._shadow(*await asyncio.gather(self.ask_student(text), self.ask_teacher(text)))
        return await self._cascade(text)

    async def _cascade(self, text: str) -> Outcome:
        first = await self.before_teacher(text)
        if isinstance(first, Outcome):
            return first
        return self.after_teacher(first, await self.ask_teacher(text))

    def _escalation(self, student: Asked) -> str | None:
        if student.reply.failed:
            return "student_failed"
        if student.value is None:
            return "invalid"
        assert self.plan.threshold is not None
        return "low_confidence" if student.confidence is None or student.confidence < self.plan.threshold else None

    def _teacher_down(self, student: Asked | None, teacher: Asked, reason: str | None) -> Outcome:
        """A failed teacher: the student's valid answer with a warning, where configured; else no answer."""
        if self.config.serve.teacher_down == "student" and student is not None and student.value is not None:
            return Outcome("student", student.value, student, teacher, reason, [TEACHER_DOWN])
        return Outcome(None, None, student, teacher, reason)

    def _shadow(self, student: Asked, teacher: Asked) -> Outcome:
        if self.config.serve.shadow_answers == "student":
            if student.reply.failed and not teacher.reply.failed:  # the teacher is there: use it
                return Outcome("teacher", content_of(teacher), student, teacher, warnings=[STUDENT_DOWN])
            return Outcome("student" if not student.reply.failed else None, content_of(student), student, teacher)
        if teacher.reply.failed:
            return self._teacher_down(student, teacher, None)
        return Outcome("teacher", content_of(teacher), student, teacher)

    def agreement(self, outcome: Outcome) -> float | None:
        """Student and teacher on the same input (shadow mode, and escalations), as compare scores agreement."""
        if outcome.student is None or outcome.teacher is None or outcome.teacher.reply.failed:
            return None
        return self.task.agree(outcome.student.value, outcome.teacher.value)


def content_of(asked: Asked) -> str | None:
    """The canonical answer where valid; the raw text otherwise (served as is, and logged as invalid)."""
    return asked.value if asked.value is not None else asked.reply.answer.text


def _alone(name: str, asked: Asked) -> Outcome:
    return Outcome(name if not asked.reply.failed else None, content_of(asked), **{name: asked})
