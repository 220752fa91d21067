"""A cascade: the student answers what it is sure of and hands the rest to the teacher.

Every query first goes to the student (its cost is always paid); below the confidence threshold the teacher
answers too, and its answer is the one used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def cascade_curve(student: Sequence[str | None], teacher: Sequence[str | None], gold: Sequence[str] | None,
                  confidence: Sequence[float | None], student_per_1k: float, teacher_per_1k: float,
                  quality: Callable[[str | None, str], float]) -> list[dict[str, Any]]:
    """For each distinct threshold: share kept by the student, blended quality and cost per 1k queries.

    Quality is the task's score against `gold` when given (every query has gold), else its agreement with
    the teacher.
    """
    n = len(student)
    scores = np.array([-np.inf if c is None else c for c in confidence], dtype=float)
    reference = gold if gold is not None else teacher
    thresholds = sorted({float("inf"), *scores.tolist()}, reverse=True)
    curve = []
    for threshold in thresholds:
        keep = scores >= threshold
        answers = [s if k else t for s, t, k in zip(student, teacher, keep, strict=True)]
        blended = sum(quality(a, r) for a, r in zip(answers, reference, strict=True)) / n if n else 0.0
        share = float(keep.mean()) if n else 0.0
        curve.append({"threshold": threshold, "student_share": share, "quality": blended,
                      "cost_per_1k": student_per_1k + (1 - share) * teacher_per_1k})
    return curve


def cheapest_meeting(curve: list[dict[str, Any]], target: float | None) -> dict[str, Any] | None:
    """The lowest-cost point whose quality reaches `target`; None if none does (or no target is set)."""
    if target is None:
        return None
    meeting = [point for point in curve if point["quality"] >= target]
    return min(meeting, key=lambda p: p["cost_per_1k"]) if meeting else None
