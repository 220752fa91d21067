import pytest

from distill import cost
from distill.compare.build import agreement, row_scores
from distill.compare.metrics import latency_percentiles, mean
from distill.config import CostConfig, load_config
from distill.tasks import make_task
from distill.tasks.classification import ClassificationSettings
from helpers import DEMO_INPUTS, study_config, write_config
from teacher.client import Answer
from teacher.stream import Budget

HOURLY = CostConfig(teacher_price_per_hour=3.6, student_price_per_hour=1.8, train_price_per_hour=3.6)
API = CostConfig(teacher_price_per_hour=0, student_price_per_hour=1.8, train_price_per_hour=3.6,
                 teacher_input_per_1m=2.0, teacher_output_per_1m=8.0)


def test_hourly_cost_per_1k() -> None:
    # $3.60/h is $0.001/s; at 10 queries/s a query costs $0.0001, so 1k cost $0.10.
    assert cost.hourly_cost_per_1k(3.6, 10) == pytest.approx(0.1)
    assert cost.hourly_cost_per_1k(3.6, 0) is None


def test_token_prices_win_over_hourly_for_the_teacher() -> None:
    # 500 prompt + 10 completion tokens at $2/$8 per 1M: $0.00108 a query, $1.08 per 1k (PRICES.md, GPT-4.1).
    assert cost.teacher_cost_per_1k(API, 5.0, 500, 10) == pytest.approx(1.08)
    assert cost.teacher_cost_per_1k(HOURLY, 10.0, 500, 10) == pytest.approx(0.1)


def test_prices_used_state_the_teachers_whole_fleet() -> None:
    fleet = HOURLY.model_copy(update={"teacher_gpus": 32})  # 4 endpoints of 8 GPUs each
    assert cost.prices_used(fleet)["teacher_fleet_per_hour"] == pytest.approx(3.6 * 32)
    assert cost.prices_used(fleet)["teacher_gpus"] == 32
    assert cost.teacher_cost_per_1k(fleet, 10.0, 500, 10) == pytest.approx(0.1 * 32)


def test_labelling_and_training_cost() -> None:
    assert cost.labelling_cost(HOURLY, 1800, 0, 0) == pytest.approx(1.8)
    assert cost.labelling_cost(API, 1800, 1_000_000, 100_000) == pytest.approx(2.8)
    assert cost.training_cost(HOURLY, 600) == pytest.approx(0.6)


def test_break_even() -> None:
    # saving $0.09 per 1k = $0.00009 per query; $9 one-off pays back after 100,000 queries.
    assert cost.break_even_queries(9.0, 0.10, 0.01) == pytest.approx(100_000)
    assert cost.break_even_queries(9.0, 0.01, 0.10) is None
    assert cost.break_even_queries(9.0, None, 0.01) is None


LABELS_TASK = make_task(ClassificationSettings(instruction="Classify.", labels=["a", "b", "c", "x"]))


def test_accuracy_counts_only_rows_with_gold() -> None:
    assert mean(row_scores(LABELS_TASK, ["a", "b", None, "c"], ["a", "x", "c", None])) == pytest.approx(1 / 3)
    assert row_scores(LABELS_TASK, ["a"], [None]) == []


def test_agreement_needs_a_valid_shared_answer() -> None:
    assert mean(agreement(LABELS_TASK, ["a", None, "b", "c"], ["a", None, "x", "c"])) == pytest.approx(0.5)


def test_latency_percentiles() -> None:
    result = latency_percentiles(list(range(1, 101)))
    assert result["p50"] == pytest.approx(50.5)
    assert result["p95"] == pytest.approx(95.05)
    assert result["p99"] >= result["p95"] >= result["p50"]


def test_a_teacher_on_several_accelerators_costs_each_of_them_per_query() -> None:
    from distill.config import TeacherConfig

    one = TeacherConfig(model="t")
    four = TeacherConfig(model="t", server={"tensor_parallel_size": 2, "data_parallel_size": 2})
    single = cost.teacher_cost_per_1k(HOURLY, 10.0, 400, 2, one)
    assert cost.teacher_cost_per_1k(HOURLY, 10.0, 400, 2, four) == pytest.approx(4 * single)
    pinned = HOURLY.model_copy(update={"teacher_gpus": 8})
    assert cost.teacher_cost_per_1k(pinned, 10.0, 400, 2, four) == pytest.approx(8 * single)


BILLED = CostConfig(teacher_price_per_hour=0, student_price_per_hour=1.8, train_price_per_hour=3.6,
                    teacher_input_per_1m=0.14, teacher_cached_input_per_1m=0.0042, teacher_output_per_1m=0.42)


def test_cached_prompt_tokens_are_billed_at_their_own_price() -> None:
    # BANKING77 as DeepSeek billed it: 397 prompt tokens, 384 of them cached, 4 completion tokens.
    billed = (13 * 0.14 + 384 * 0.0042 + 4 * 0.42) / 1e6
    assert cost.teacher_cost_per_1k(BILLED, None, 397, 4, None, 384) == pytest.approx(1000 * billed)
    assert cost.teacher_cost_per_1k(BILLED, None, 397, 4) == pytest.approx(1000 * (397 * 0.14 + 4 * 0.42) / 1e6)
    assert cost.teacher_cost_per_1k(API, None, 500, 10, None, 400) == pytest.approx(1.08), "no cached price: list"
    rows = [{"prompt_tokens": 397, "completion_tokens": 4, "cached_tokens": 384}] * 1000
    assert cost.labelling_cost_of_rows(BILLED, rows) == pytest.approx(1000 * billed)
    assert cost.labelling_cost_of_rows(BILLED, [{"prompt_tokens": 397, "completion_tokens": 4}]) == pytest.approx(
        (397 * 0.14 + 4 * 0.42) / 1e6), "rows written before cached tokens were kept pay the input price"


def test_a_cached_price_needs_the_token_prices() -> None:
    with pytest.raises(ValueError, match="teacher_cached_input_per_1m needs"):
        CostConfig(teacher_price_per_hour=0, student_price_per_hour=1, train_price_per_hour=1,
                   teacher_cached_input_per_1m=0.01)


def test_teacher_max_cost_counts_cached_prompt_tokens_at_their_price(tmp_path) -> None:
    """The budget that stops labelling spends what the provider bills: 300 of 400 prompt tokens cached."""
    prices = {"teacher_price_per_hour": 0, "student_price_per_hour": 1, "train_price_per_hour": 1,
              "teacher_input_per_1m": 0.14, "teacher_cached_input_per_1m": 0.0042, "teacher_output_per_1m": 0.42}
    config = load_config(write_config(tmp_path / "c.yaml", study_config("smollm2-135m-instruct", DEMO_INPUTS,
                                                                        cost=prices)))
    budget = Budget(config)
    budget.add(Answer(prompt_tokens=400, completion_tokens=2, cached_tokens=300))
    assert budget.spent() == pytest.approx((100 * 0.14 + 300 * 0.0042 + 2 * 0.42) / 1e6)
