"""Whether the teacher is healthy, checked while labelling: its requests (the breaker) and its answers.

The breaker stops a run when too many requests in a row, or too large a share, fail. But a server can answer
every request with status 200 and still be broken (seen: a whole demo run of empty answers, with 5 prompt tokens
reported for 430-token prompts). `Health` looks at the answers that arrive: a window of them mostly empty or
invalid, or a prompt token count far from the teacher tokenizer's, stops the stage.
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


class TeacherFailing(UserError):
    """The teacher failed too often to go on; answers paid for are in the cache and a rerun resumes."""


class TeacherUnhealthy(UserError):
    """The teacher's answers look like a broken server's; the stage stops and is not recorded complete."""


@dataclass
class Breaker:
    """Trips after `in_a_row` failures in a row, or when more than `max_rate` of the last `window` requests
    failed (once at least `window` // 4 were seen)."""

    in_a_row: int
    max_rate: float
    window: int = 200
    recent: deque[bool] = field(default_factory=deque)
    recent_failures: int = 0
    last_error: str | None = None
    failures_in_a_row: int = 0
    reason: str | None = None

    def record(self, answer: Answer) -> None:
        failed = answer.error is not None
        self.recent.append(failed)
        self.recent_failures += failed
        if len(self.recent) > self.window:
            self.recent_failures -= self.recent.popleft()
        if failed:
            self.last_error = answer.error
            self.failures_in_a_row += 1
        else:
            self.failures_in_a_row = 0
        if self.reason is None and self.recent_failures:  # with no failure in the window nothing can trip
            self._check()

    def _check(self) -> None:
        rate = self.recent_failures / len(self.recent)
        if self.failures_in_a_row >= self.in_a_row:
            self.reason = (f"{self.in_a_row} requests in a row failed (teacher.max_failures_in_a_row); "
                           f"last: {self.last_error}")
        elif len(self.recent) >= self.window // 4 and rate > self.max_rate:
            self.reason = (f"{rate:.0%} of the last {len(self.recent)} requests failed (teacher.max_failure_rate="
                           f"{self.max_rate:g}); last: {self.last_error}")


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
    prompts_ignored: bool = False  # tripped by the token count: even its valid-looking answers are not to be kept

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
            self.prompts_ignored = True
            self.reason = (f"the server reported {reported} prompt tokens for a prompt of {counted} tokens by the "
                           "teacher's tokenizer (it is not reading the prompts it is sent)")
