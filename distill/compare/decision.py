"""The verdict at the top of a report, decided by a stated rule and never by the absence of evidence.

The user says what "as good" means: `compare.max_quality_drop` (against gold) or `compare.min_agreement` (with
no gold, agreement with the teacher). It is a non-inferiority test: the student may replace the teacher only when
the lower 95% bound of the paired difference (student - teacher) is above -max_quality_drop, or the lower bound
of agreement is above min_agreement. "No significant difference" on a small test set is not "as good".

Verdicts: `distil`; `cascade` (the student answers what it is sure of, the teacher the rest, and that blend
passes the same test out of sample at lower cost); `keep_teacher` (the student is confidently below the bar, or
saves nothing, or saves too slowly to repay its set-up); `insufficient_evidence`, with the test queries that would
decide it if the observed rates hold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from distill.present import duration
from distill.stats import queries_to_decide

PAYBACK_DAYS_LIMIT = 90  # a saving that takes longer to repay its set-up cost is not worth the risk


@dataclass(frozen=True)
class Rule:
    measure: str  # the task's quality name against gold, or "agreement with the teacher"
    against_gold: bool
    bar: float  # -max_quality_drop on the difference, or min_agreement on agreement

    def text(self) -> str:
        if self.against_gold:
            return (f"distil only if the lower 95% bound of the paired difference in {self.measure} (student - "
                    f"teacher) is above {self.bar:+.3f} (compare.max_quality_drop {-self.bar:g})")
        return (f"distil only if the lower 95% bound of the student's agreement with the teacher is above "
                f"{self.bar:g} (compare.min_agreement; no gold labels)")


@dataclass(frozen=True)
class Evidence:
    """What the test queries say of one way to serve (the student alone, or the cascade) against the rule."""

    estimate: float  # paired difference in quality, or agreement
    interval: list[float]
    sd: float  # spread per query, for the power estimate
    n: int

    def passes(self, rule: Rule) -> bool:
        return self.interval[0] > rule.bar

    def fails(self, rule: Rule) -> bool:
        return self.interval[1] < rule.bar


@dataclass(frozen=True)
class Option:
    evidence: Evidence
    cost_per_1k: float | None
    payback_days: float | None  # None: never pays back


@dataclass
class Recommendation:
    verdict: str
    rule: str
    reason: str
    measure: str
    against_gold: bool
    bar: float
    n_queries: int
    quality_diff: float | None  # with gold: student - teacher
    quality_diff_ci: list[float] | None
    agreement: float | None
    agreement_ci: list[float] | None
    queries_needed: int | None  # test queries that would decide it, if the observed rates hold
    cascade: dict[str, Any] | None
    student_cost_per_1k: float | None
    teacher_cost_per_1k: float | None
    payback_days: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _saves(option: Option, teacher_per_1k: float | None) -> bool:
    return (option.cost_per_1k is not None and teacher_per_1k is not None and option.cost_per_1k < teacher_per_1k
            and option.payback_days is not None)


def decide(rule: Rule, student: Option, cascade: Option | None, teacher_per_1k: float | None
           ) -> tuple[str, str, int | None]:
    """The verdict, why, and the test queries that would decide it (only for insufficient evidence)."""
    evidence = student.evidence
    if evidence.passes(rule):
        if not _saves(student, teacher_per_1k):
            return "keep_teacher", "the student is as good but not cheaper per query than the teacher", None
        if student.payback_days > PAYBACK_DAYS_LIMIT:
            return "keep_teacher", (f"the saving takes {duration(student.payback_days)} to repay labelling and "
                                    f"training, over the {PAYBACK_DAYS_LIMIT}-day limit, at this volume"), None
        return "distil", "the student passes the rule and pays back quickly", None
    if cascade is not None and cascade.evidence.passes(rule) and _saves(cascade, teacher_per_1k) \
            and cascade.payback_days <= PAYBACK_DAYS_LIMIT:
        return "cascade", "the student alone does not pass the rule, but the cascade does, out of sample", None
    if not _saves(student, teacher_per_1k):
        return "keep_teacher", "the student is not cheaper per query than the teacher", None
    if student.payback_days > PAYBACK_DAYS_LIMIT:  # no test set, however large, makes this worth it
        return "keep_teacher", (f"even if it passed the rule, the saving would take {duration(student.payback_days)}"
                                f" to repay labelling and training, over the {PAYBACK_DAYS_LIMIT}-day limit"), None
    if evidence.fails(rule):
        return "keep_teacher", "the student is confidently below the bar (the whole interval is under it)", None
    needed = queries_to_decide(evidence.estimate, evidence.sd, rule.bar)
    return "insufficient_evidence", "the interval straddles the bar", needed


def failed_recommendation(rule: Rule, n: int, why: str) -> Recommendation:
    """A verdict where a measurement failed: nothing is compared with a number that was never measured."""
    return Recommendation("insufficient_evidence", rule.text(), why, rule.measure, rule.against_gold, rule.bar, n,
                          None, None, None, None, None, None, None, None, None)
