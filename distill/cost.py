"""The cost model: measured serving time and tokens times configured prices.

Self-hosted cost per query is the machine's price per second divided by the queries per second it sustains at
saturation (compare raises the requests in flight until throughput stops rising): a busy machine, which is how a
batch job or a well-loaded service runs it. Every cost formula of the project lives here.
"""

from __future__ import annotations

from distill.config import CostConfig, TeacherConfig

SECONDS_PER_HOUR = 3600.0


def teacher_gpus(cost: CostConfig, teacher: TeacherConfig | None = None) -> int:
    """Accelerators serving the teacher: `cost.teacher_gpus`, else what the server distill starts uses
    (tensor x pipeline x data parallel), else 1."""
    if cost.teacher_gpus is not None:
        return cost.teacher_gpus
    if teacher is None or teacher.urls:
        return 1
    server = teacher.server
    return server.tensor_parallel_size * server.pipeline_parallel_size * server.data_parallel_size


def teacher_hourly(cost: CostConfig, teacher: TeacherConfig | None = None) -> float:
    """The teacher's price per hour: the price of one accelerator times the accelerators it uses."""
    return cost.teacher_price_per_hour * teacher_gpus(cost, teacher)


def prices_used(cost: CostConfig, teacher: TeacherConfig | None = None) -> dict:
    """The configured prices and the teacher's whole fleet they imply, as every report states them."""
    return cost.model_dump() | {"teacher_gpus": teacher_gpus(cost, teacher),
                                "teacher_fleet_per_hour": teacher_hourly(cost, teacher)}


def hourly_cost_per_1k(price_per_hour: float, queries_per_s: float | None) -> float | None:
    if queries_per_s is None or queries_per_s <= 0:
        return None
    return price_per_hour / SECONDS_PER_HOUR / queries_per_s * 1000


def token_cost(prompt_tokens: float, completion_tokens: float, input_per_1m: float, output_per_1m: float,
               cached_tokens: float = 0.0, cached_input_per_1m: float | None = None) -> float:
    """As providers bill: the prompt tokens served from their prompt cache (`cached_tokens`, part of
    `prompt_tokens`) at the cached price where one is given, the rest at the input price."""
    cached_price = input_per_1m if cached_input_per_1m is None else cached_input_per_1m
    return ((prompt_tokens - cached_tokens) * input_per_1m + cached_tokens * cached_price
            + completion_tokens * output_per_1m) / 1e6


def api_cost(cost: CostConfig, prompt_tokens: float, completion_tokens: float, cached_tokens: float = 0.0) -> float:
    """Tokens at the configured API prices (call only where `priced_per_token`)."""
    assert cost.teacher_input_per_1m is not None and cost.teacher_output_per_1m is not None
    return token_cost(prompt_tokens, completion_tokens, cost.teacher_input_per_1m, cost.teacher_output_per_1m,
                      cached_tokens, cost.teacher_cached_input_per_1m)


def per_token_cost(cost: CostConfig, prompt_tokens: float, completion_tokens: float) -> float | None:
    """The teacher's price for these tokens where it is priced per token (an API teacher), else None."""
    if cost.teacher_input_per_1m is None or cost.teacher_output_per_1m is None:
        return None
    return token_cost(prompt_tokens, completion_tokens, cost.teacher_input_per_1m, cost.teacher_output_per_1m)


def priced_per_token(cost: CostConfig) -> bool:
    """An API teacher: its price follows its tokens, not a machine's time."""
    return cost.teacher_input_per_1m is not None and cost.teacher_output_per_1m is not None


def teacher_cost_per_1k(cost: CostConfig, queries_per_s: float | None, prompt_tokens_per_query: float,
                        completion_tokens_per_query: float, teacher: TeacherConfig | None = None,
                        cached_tokens_per_query: float = 0.0) -> float | None:
    """Per-token API prices when configured (an API teacher; cached prompt tokens at their own price), else the
    hourly price of every accelerator serving it."""
    if priced_per_token(cost):
        return 1000 * api_cost(cost, prompt_tokens_per_query, completion_tokens_per_query, cached_tokens_per_query)
    return hourly_cost_per_1k(teacher_hourly(cost, teacher), queries_per_s)


def labelling_cost(cost: CostConfig, teacher_seconds: float, prompt_tokens: int, completion_tokens: int,
                   teacher: TeacherConfig | None = None, cached_tokens: int = 0) -> float:
    if priced_per_token(cost):
        return api_cost(cost, prompt_tokens, completion_tokens, cached_tokens)
    return teacher_hourly(cost, teacher) * teacher_seconds / SECONDS_PER_HOUR


LABELLING_COLUMNS = ("serving_s", "prompt_tokens", "completion_tokens", "cached_tokens")  # what an answer cost


def labelling_cost_of_rows(cost: CostConfig, rows: list[dict], teacher: TeacherConfig | None = None) -> float:
    """What the labelled rows cost when each answer was paid for, whichever run paid: tokens at per-token prices,
    else the seconds of teacher serving each answer recorded (`serving_s`, 0 where absent). Both modes count the
    same rows."""
    return labelling_cost(cost, sum(r.get("serving_s") or 0.0 for r in rows),
                          sum(r.get("prompt_tokens") or 0 for r in rows),
                          sum(r.get("completion_tokens") or 0 for r in rows), teacher,
                          sum(r.get("cached_tokens") or 0 for r in rows))


def training_seconds(manifest: dict) -> float:
    """Seconds of training across every attempt (a resumed run records its earlier attempts' time too)."""
    return float(manifest.get("train_seconds_total", manifest.get("seconds", 0.0)))


def cascade_cost_per_1k(student_per_1k: float, teacher_per_1k: float, student_share: float) -> float:
    """Every query pays the student; the share it does not keep pays the teacher too."""
    return student_per_1k + (1 - student_share) * teacher_per_1k


def payback_days(break_even: float | None, monthly_queries: int) -> float | None:
    return None if break_even is None else break_even / (monthly_queries / 30)


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
            rows.append({"teacher_price_factor": price, "monthly_queries": monthly_queries * traffic,
                         "break_even_queries": even, "payback_days": payback_days(even, monthly_queries * traffic)})
    return rows


def labelling_cost_from_manifest(cost: CostConfig, manifest: dict, teacher: TeacherConfig | None = None) -> float:
    """What the generate stage recorded paying the teacher, at the given prices."""
    usage = manifest.get("usage", {})
    return labelling_cost(cost, manifest.get("timings", {}).get("teacher", 0.0), usage.get("prompt_tokens", 0),
                          usage.get("completion_tokens", 0), teacher, usage.get("cached_tokens", 0))


def measuring_cost(cost: CostConfig, timings: dict[str, float], teacher: TeacherConfig | None = None) -> float:
    """The serving time compare spent measuring the teacher and the students."""
    student_seconds = sum(timings.get(name, 0.0) for name in ("student", "merged", "baseline"))
    return (timings.get("teacher", 0.0) * teacher_hourly(cost, teacher)
            + student_seconds * cost.student_price_per_hour) / SECONDS_PER_HOUR



def _prices(manifest: dict) -> tuple[CostConfig, TeacherConfig]:
    """The prices and teacher a stage ran with, from its manifest."""
    config = manifest["config"]
    return CostConfig.model_validate(config["cost"]), TeacherConfig.model_validate(config["teacher"])


def generate_cost(manifest: dict) -> float:
    price, teacher = _prices(manifest)
    return labelling_cost_from_manifest(price, manifest, teacher)


def train_cost(manifest: dict) -> float:
    return training_cost(_prices(manifest)[0], training_seconds(manifest))


def compare_cost(manifest: dict) -> float:
    price, teacher = _prices(manifest)
    return measuring_cost(price, manifest.get("timings", {}), teacher)
