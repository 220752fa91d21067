"""The verdict follows the stated rule: one test per branch, on numbers where the right verdict is known."""

import numpy as np
import pytest

from distill.compare.build import evidence
from distill.compare.decision import Evidence, Option, Rule, decide
from distill.present import render
from distill.stats import queries_to_decide

GOLD = Rule("accuracy", True, -0.02)
NO_GOLD = Rule("agreement with the teacher", False, 0.95)


def _pairs(only_student: int, only_teacher: int, both: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    student = [1.0] * only_student + [0.0] * only_teacher + [1.0] * both + [0.0] * neither
    teacher = [0.0] * only_student + [1.0] * only_teacher + [1.0] * both + [0.0] * neither
    return np.array(student), np.array(teacher)


def _student(ev: Evidence, cost: float = 0.1, payback: float | None = 5.0) -> Option:
    return Option(ev, cost, payback)


def test_eight_points_below_on_48_queries_is_not_distil() -> None:
    """The demo's old failure: McNemar p > 0.05, yet the student is 8 points below. Not 'as good'."""
    ev = evidence(GOLD, *_pairs(1, 5, 35, 7))
    assert ev.estimate == pytest.approx(-4 / 48)
    verdict, _, needed = decide(GOLD, _student(ev), None, 1.0)
    assert ev.interval[0] < GOLD.bar < ev.interval[1]  # 48 queries cannot tell -0.083 from the bar
    assert verdict == "insufficient_evidence" and needed == queries_to_decide(ev.estimate, ev.sd, GOLD.bar) > 48


def test_distil_when_the_lower_bound_clears_the_margin() -> None:
    ev = evidence(GOLD, *_pairs(20, 2, 950, 28))  # 1000 queries, student 1.8 points better
    assert ev.interval[0] > -0.02
    assert decide(GOLD, _student(ev), None, 1.0)[0] == "distil"


def test_keep_teacher_when_confidently_worse() -> None:
    ev = evidence(GOLD, *_pairs(5, 60, 200, 35))  # 300 queries, 18 points worse
    assert ev.interval[1] < -0.02
    assert decide(GOLD, _student(ev), None, 1.0)[0] == "keep_teacher"


def test_insufficient_evidence_says_how_many_queries_would_decide() -> None:
    ev = evidence(GOLD, *_pairs(2, 2, 40, 4))  # 48 queries, no difference seen: the interval is too wide
    assert ev.interval[0] < -0.02 < ev.interval[1]
    verdict, _, needed = decide(GOLD, _student(ev), None, 1.0)
    assert verdict == "insufficient_evidence" and needed > 48
    # Evidence of that size at the same rates would decide it.
    scale = needed // 48 + 1
    bigger = evidence(GOLD, *_pairs(2 * scale, 2 * scale, 40 * scale, 4 * scale))
    assert decide(GOLD, _student(bigger), None, 1.0)[0] == "distil"


def test_cascade_when_it_passes_and_the_student_alone_does_not() -> None:
    alone = evidence(GOLD, *_pairs(5, 60, 200, 35))
    blend = evidence(GOLD, *_pairs(5, 3, 257, 35))
    assert blend.interval[0] > -0.02
    verdict, reason, _ = decide(GOLD, _student(alone), Option(blend, 0.5, 10.0), 1.0)
    assert verdict == "cascade" and "cascade" in reason


def test_keep_teacher_when_the_student_is_as_good_but_pays_back_too_slowly() -> None:
    ev = evidence(GOLD, *_pairs(20, 2, 950, 28))
    assert decide(GOLD, _student(ev, payback=400.0), None, 1.0)[0] == "keep_teacher"
    assert decide(GOLD, _student(ev, cost=2.0, payback=None), None, 1.0)[0] == "keep_teacher"


def test_a_slow_payback_keeps_the_teacher_whatever_more_queries_would_show() -> None:
    ev = evidence(GOLD, *_pairs(2, 2, 40, 4))  # the interval straddles the bar
    verdict, reason, needed = decide(GOLD, _student(ev, payback=400.0), None, 1.0)
    assert (verdict, needed) == ("keep_teacher", None) and "400.0 days" in reason


def test_without_gold_agreement_must_clear_min_agreement() -> None:
    """40% agreement never distils, however cheap the student (the old report said 'Distil' here)."""
    low = evidence(NO_GOLD, np.array([1.0] * 40 + [0.0] * 60), np.ones(100))
    assert decide(NO_GOLD, _student(low, cost=0.001), None, 1.0)[0] == "keep_teacher"
    high = evidence(NO_GOLD, np.array([1.0] * 998 + [0.0] * 2), np.ones(1000))
    assert high.interval[0] > 0.95
    assert decide(NO_GOLD, _student(high), None, 1.0)[0] == "distil"
    unsure = evidence(NO_GOLD, np.array([1.0] * 47 + [0.0]), np.ones(48))  # 98% of 48: bound below 0.95
    verdict, _, needed = decide(NO_GOLD, _student(unsure), None, 1.0)
    assert verdict == "insufficient_evidence" and needed > 48


def test_power_estimate_is_none_on_the_bar() -> None:
    assert queries_to_decide(-0.02, 0.3, -0.02) is None
    assert queries_to_decide(0.0, 0.3, -0.02) == int(np.ceil(((1.959964 + 0.841621) * 0.3 / 0.02) ** 2))


def test_prose_is_rendered_from_the_recommendation() -> None:
    rec = {"verdict": "insufficient_evidence", "reason": "the interval straddles the bar", "rule": "RULE",
           "measure": "accuracy", "against_gold": True, "bar": -0.02, "n_queries": 48, "quality_diff": 0.0,
           "quality_diff_ci": [-0.09, 0.09], "agreement": None, "agreement_ci": None, "queries_needed": 500,
           "cascade": None, "student_cost_per_1k": 0.01, "teacher_cost_per_1k": 0.1, "payback_days": 0.5}
    text = render(rec)
    assert text.startswith("Not enough evidence to decide yet. Why: the interval straddles the bar. Rule: RULE.")
    assert "+0.000 [-0.090, +0.090]" in text and "about 500 test queries" in text and "452 more" in text
    assert "12 hours" in text
