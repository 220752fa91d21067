"""The recommendation at the top of a report: distil or not at the configured volume, and why, in plain words."""

from __future__ import annotations

from typing import Any

from distill.present import duration

PAYBACK_DAYS_LIMIT = 90  # a saving that takes longer to repay its set-up cost is not worth the risk


def _quality_sentence(metrics: dict[str, Any]) -> tuple[str, bool]:
    """What the sample can say about the quality gap, and whether the student is measurably worse."""
    teacher, student, test = metrics["teacher"], metrics["student"], metrics.get("mcnemar")
    has_gold = student["accuracy"] is not None and teacher["accuracy"] is not None
    if test is None and has_gold:
        return _graded_sentence(metrics)
    if test is None or not has_gold:
        agreement = metrics["agreement"]
        interval = metrics.get("agreement_ci")
        span = f" (95% interval {interval[0]:.3f}-{interval[1]:.3f})" if interval else ""
        return f"Without gold labels, the student agrees with the teacher on {agreement:.1%} of queries{span}.", False
    name = metrics.get("task", {}).get("quality", "accuracy")
    interval = student["accuracy_ci"]
    span = f", 95% interval {interval[0]:.3f}-{interval[1]:.3f}" if interval else ""
    gap = student["accuracy"] - teacher["accuracy"]
    if test["significant"]:
        direction = "worse" if gap < 0 else "better"
        return (f"The student is measurably {direction} than the teacher: {name} {student['accuracy']:.3f}"
                f"{span}, against {teacher['accuracy']:.3f} (McNemar p={test['p_value']:.3g}).", gap < 0)
    return (f"On {metrics['n_queries']} queries the sample shows no significant quality difference: student {name} "
            f"{student['accuracy']:.3f}{span}, teacher {teacher['accuracy']:.3f} (McNemar p={test['p_value']:.3g}); "
            "a larger test set would narrow the interval.", False)


def _graded_sentence(metrics: dict[str, Any]) -> tuple[str, bool]:
    """A graded score (ROUGE) has no paired exact test: the student is worse when its whole 95% interval lies
    below the teacher's score."""
    teacher, student = metrics["teacher"], metrics["student"]
    name = metrics.get("task", {}).get("quality", "quality")
    interval = student["accuracy_ci"]
    span = f", 95% interval {interval[0]:.3f}-{interval[1]:.3f}" if interval else ""
    worse = interval is not None and interval[1] < teacher["accuracy"]
    verdict = "measurably below the teacher's" if worse else "not measurably below the teacher's"
    return (f"The student's {name} is {student['accuracy']:.3f}{span}, {verdict} {teacher['accuracy']:.3f}.", worse)


def recommendation(metrics: dict[str, Any]) -> str:
    quality, worse = _quality_sentence(metrics)
    teacher_cost, student_cost = metrics["teacher"]["cost_per_1k_queries"], metrics["student"]["cost_per_1k_queries"]
    even, monthly = metrics["break_even_queries"], metrics["monthly"]
    if even is None or teacher_cost is None or student_cost is None:
        return f"Do not distil: the student is not cheaper per query than the teacher. {quality}"
    payback_days = even / (monthly["queries"] / 30)
    cost = (f"The student costs ${student_cost:.4f} per 1k queries against ${teacher_cost:.4f} for the teacher; "
            f"labelling and training (${metrics['one_off_cost']['total']:.4f}) pay for themselves after "
            f"{even:,.0f} queries, {duration(payback_days)} at {monthly['queries']:,} queries a month, then save "
            f"${monthly['saving']:,.2f} a month.")
    best = metrics["cascade"]["best"]
    if worse and best is not None and best["student_share"] > 0:
        return (f"Distil with a cascade: the student answers the {best['student_share']:.0%} of queries it is most "
                f"sure of and the teacher the rest, which reaches the target {metrics['cascade']['quality']} "
                f"{metrics['cascade']['target']} at ${best['cost_per_1k']:.4f} per 1k queries. {quality} {cost}")
    if worse:
        return f"Do not replace the teacher yet: {quality[0].lower()}{quality[1:]} {cost}"
    if payback_days > PAYBACK_DAYS_LIMIT:
        return (f"Not at this volume: the saving takes {duration(payback_days)} to repay the set-up cost. "
                f"{quality} {cost}")
    return f"Distil: the student can replace the teacher for this traffic. {quality} {cost}"
