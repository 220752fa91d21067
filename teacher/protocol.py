"""What the teacher is sent for a row (its chat request: messages, sampling, output constraint) and the key its
answer is cached under. generate keys the answers it pays for here, compare reads the teacher's answers to the
test queries through the same keys, and `distill serve` asks the teacher the same request: one definition of
each, so they cannot drift apart."""

from __future__ import annotations

from typing import Any

from distill.config import Config, TeacherConfig
from distill.tasks import Task
from teacher.cache import key_prefix

# The input's place in the request every key shares: the key is a hash of this template's prefix and then the text
# (teacher/cache.py request_key), so no row's request is serialised whole. NUL bytes occur in no prompt template.
TEXT_SLOT = "\0{text}\0"


def teacher_request(task: Task, teacher: TeacherConfig, text: str, samples: int | None = None,
                    constrained: bool = True) -> dict[str, Any]:
    """The chat request for one input; `constrained=False` leaves out the output constraint (fidelity checks)."""
    request: dict[str, Any] = {
        "messages": task.teacher_messages(text, teacher.rationale),
        "temperature": teacher.temperature,
        "max_tokens": task.answer_token_budget(teacher.max_tokens, teacher.rationale),
        "logprobs": True,
    }
    constraint = task.teacher_constraint(teacher.rationale) if constrained else None
    if constraint is not None:
        request["extra_body"] = {"structured_outputs": constraint}
    if (samples or teacher.samples) > 1:
        request["n"] = samples or teacher.samples
    if teacher.top_logprobs:
        request["top_logprobs"] = teacher.top_logprobs
    return request


def cache_fingerprint(config: Config, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """What keys the cached answers. Beside a live teacher, the recorded file fills only what the cache lacks, so
    it stays out of the keys: a log that grows every day (distill serve's) must not orphan the live answers paid
    for before. Recorded answers alone are keyed by the files' bytes, so an edited file is read again."""
    return {k: v for k, v in fingerprint.items() if k != "recorded"} if config.teacher.live else fingerprint


def cache_prefix(config: Config, task: Task, teacher: TeacherConfig, fingerprint: dict[str, Any]) -> bytes:
    """What every cache key of this teacher (`fingerprint`: teacher/fingerprint.py teacher_fingerprint) and request
    shape shares; a row's key is `request_key(prefix, text)`."""
    return key_prefix(cache_fingerprint(config, fingerprint), teacher_request(task, teacher, TEXT_SLOT))
