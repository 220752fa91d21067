"""The cost model: measured serving time and tokens times configured prices.

Self-hosted cost per query is the machine's price per second divided by the measured queries per second:
the machine is assumed busy serving at the measured concurrency, which is how a batch job runs it.
"""

from __future__ import annotations

from distill.config import CostConfig

SECONDS_PER_HOUR = 3600.0


def hourly_cost_per_1k(price_per_hour: float, queries_per_s: float) -> float | None:
    if queries_per_s <= 0:
        return None
    return price_per_hour / SECONDS_PER_HOUR / queries_per_s * 1000


def token_cost(prompt_tokens: float, completion_tokens: float, input_per_1m: float, output_per_1m: float) -> float:
    return (prompt_tokens * input_per_1m + completion_tokens * output_per_1m) / 1e6


def per_token_cost(cost: CostConfig, prompt_tokens: float, completion_tokens: float) -> float | None:
    """The teacher's price for these tokens where it is priced per token (an API teacher), else None."""
    if cost.teacher_input_per_1m is None or cost.teacher_output_per_1m is None:
        return None
    return token_cost(prompt_tokens, completion_tokens, cost.teacher_input_per_1m, cost.teacher_output_per_1m)


def teacher_cost_per_1k(cost: CostConfig, queries_per_s: float, prompt_tokens_per_query: float,
                        completion_tokens_per_query: float) -> float | None:
    """Per-token API prices when configured (an API teacher), else the machine's hourly price."""
    if cost.teacher_input_per_1m is not None and cost.teacher_output_per_1m is not None:
        return 1000 * token_cost(prompt_tokens_per_query, completion_tokens_per_query,
                                 cost.teacher_input_per_1m, cost.teacher_output_per_1m)
    return hourly_cost_per_1k(cost.teacher_price_per_hour, queries_per_s)


def labelling_cost(cost: CostConfig, teacher_seconds: float, prompt_tokens: int, completion_tokens: int) -> float:
    if cost.teacher_input_per_1m is not None and cost.teacher_output_per_1m is not None:
        return token_cost(prompt_tokens, completion_tokens, cost.teacher_input_per_1m, cost.teacher_output_per_1m)
    return cost.teacher_price_per_hour * teacher_seconds / SECONDS_PER_HOUR


def training_cost(cost: CostConfig, train_seconds: float) -> float:
    return cost.train_price_per_hour * train_seconds / SECONDS_PER_HOUR


def break_even_queries(one_off_cost: float, teacher_per_1k: float | None, student_per_1k: float | None) -> float | None:
    """Queries after which the student's saving has paid for labelling and training; None without a saving."""
    if teacher_per_1k is None or student_per_1k is None:
        return None
    saving_per_query = (teacher_per_1k - student_per_1k) / 1000
    if saving_per_query <= 0:
        return None
    return one_off_cost / saving_per_query


def monthly(teacher_per_1k: float | None, student_per_1k: float | None, queries: int) -> dict[str, float | None]:
    """Serving cost for a month of traffic, each model alone."""
    teacher = None if teacher_per_1k is None else teacher_per_1k * queries / 1000
    student = None if student_per_1k is None else student_per_1k * queries / 1000
    saving = None if teacher is None or student is None else teacher - student
    return {"queries": queries, "teacher": teacher, "student": student, "saving": saving}


def sensitivity(one_off_cost: float, teacher_per_1k: float | None, student_per_1k: float | None,
                monthly_queries: int, price_factors: tuple[float, ...] = (0.5, 1.0, 2.0),
                traffic_factors: tuple[float, ...] = (0.1, 1.0, 10.0)) -> list[dict[str, float | None]]:
    """Break-even volume and payback time when the teacher's price and the traffic differ from the assumed."""
    rows = []
    for price in price_factors:
        scaled = None if teacher_per_1k is None else teacher_per_1k * price
        even = break_even_queries(one_off_cost, scaled, student_per_1k)
        for traffic in traffic_factors:
            per_day = monthly_queries * traffic / 30
            rows.append({"teacher_price_factor": price, "monthly_queries": monthly_queries * traffic,
                         "break_even_queries": even, "payback_days": None if even is None else even / per_day})
    return rows


def labelling_cost_from_manifest(cost: CostConfig, manifest: dict) -> float:
    """What the generate stage recorded paying the teacher, at the given prices."""
    usage = manifest.get("usage", {})
    return labelling_cost(cost, manifest.get("timings", {}).get("teacher", 0.0), usage.get("prompt_tokens", 0),
                          usage.get("completion_tokens", 0))


def measuring_cost(cost: CostConfig, timings: dict[str, float]) -> float:
    """The serving time compare spent measuring the teacher and the students."""
    student_seconds = sum(timings.get(name, 0.0) for name in ("student", "merged"))
    return (timings.get("teacher", 0.0) * cost.teacher_price_per_hour
            + student_seconds * cost.student_price_per_hour) / SECONDS_PER_HOUR
