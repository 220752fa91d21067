"""Whether the teacher's answers look like a healthy server's, checked while labelling.

A server can answer every request with status 200 and still be broken: a model folder replaced while vLLM loaded
it gave empty answers to a whole run, with 5 prompt tokens reported for 600-token prompts. Requests that fail are
the breaker's (teacher/stream.py); this looks at the answers that arrive: a window of them mostly empty or invalid,
or a prompt token count far from the teacher tokenizer's, stops the stage.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from distill.errors import UserError
from teacher.client import Answer

TOKEN_RATIO = 2.0  # reported prompt tokens may differ from the tokenizer's count by this factor, either way
TOKEN_CHECKS = 3  # the first answers received are all checked, then one in every TOKEN_EVERY
TOKEN_EVERY = 256


class TeacherUnhealthy(UserError):
    """The teacher's answers look like a broken server's; the stage stops and is not recorded complete."""


@dataclass
class Health:
    """Trips when more than `max_invalid_rate` of the last `window` answers (once `window` // 2 were seen) are
    empty or invalid, or when a reported prompt token count is off by more than `TOKEN_RATIO`."""

    invalid: Callable[[Answer], bool]
    max_invalid_rate: float
    window: int = 32
    recent: deque[bool] = field(default_factory=deque)
    bad: int = 0
    last_bad: str | None = None
    checked_tokens: int = 0
    reason: str | None = None

    def record(self, answer: Answer) -> None:
        bad = self.invalid(answer)
        self.recent.append(bad)
        self.bad += bad
        if bad:
            self.last_bad = answer.text
        if len(self.recent) > self.window:
            self.bad -= self.recent.popleft()
        if (self.reason is None and len(self.recent) >= self.window // 2
                and self.bad > self.max_invalid_rate * len(self.recent)):
            self.reason = (f"{self.bad} of the last {len(self.recent)} answers were empty or invalid (last: "
                           f"{self.last_bad!r}; teacher.max_invalid_rate={self.max_invalid_rate:g})")

    def wants_tokens(self, received: int) -> bool:
        return received < TOKEN_CHECKS or received % TOKEN_EVERY == 0

    def check_tokens(self, reported: int, counted: int) -> None:
        self.checked_tokens += 1
        if self.reason is None and counted and not 1 / TOKEN_RATIO <= reported / counted <= TOKEN_RATIO:
            self.reason = (f"the server reported {reported} prompt tokens for a prompt of {counted} tokens by the "
                           "teacher's tokenizer (it is not reading the prompts it is sent)")
