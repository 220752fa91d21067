"""Compare's statistics, cascade, cost model and report on fixed numbers, and the HTML in a real browser."""

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill import cost
from distill.compare.build import build_metrics
from distill.compare.cascade import cascade_curve, cheapest_clearing, cross_fitted_cascade
from distill.compare.measure import Measured, SweepPoint
from distill.compare.report import write_reports
from distill.config import load_config
from distill.stats import class_report, confusion, mcnemar
from distill.tasks import make_task
from distill.tasks.classification import ClassificationSettings
from helpers import DEMO_INPUTS, study_config, write_config
from teacher.client import Answer, Sample

LABELS = ["a", "b", "c"]
LABELS_TASK = make_task(ClassificationSettings(instruction="Classify.", labels=LABELS))


def test_mcnemar_counts_only_discordant_pairs() -> None:
    student = [True] * 10 + [False] * 2 + [True] * 30
    teacher = [False] * 10 + [True] * 2 + [True] * 30
    result = mcnemar(student, teacher)
    assert (result["only_student_right"], result["only_teacher_right"]) == (10, 2)
    assert result["p_value"] == pytest.approx(2 * 79 / 4096)  # exact binomial, 2 of 12 at p=0.5
    assert result["significant"]
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0


def test_class_report_and_confusion() -> None:
    gold = ["a", "a", "b", "b", "c", None]
    predictions = ["a", "b", "b", "b", None, "a"]
    report = class_report(predictions, gold, LABELS)
    assert report["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert report["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["c"]["f1"] == 0.0
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert confusion(predictions, gold, LABELS) == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1]]


def test_cascade_curve_and_cheapest_threshold() -> None:
    # Row quality when the student's answer is used, and when the teacher's is.
    kept, deferred = np.array([1.0, 0.0, 1.0, 0.0]), np.array([1.0, 1.0, 1.0, 1.0])
    confidence = np.array([-0.1, -2.0, -0.5, -3.0])
    curve = cascade_curve(kept, deferred, confidence, student_per_1k=1.0, teacher_per_1k=10.0)
    by_share = {p.student_share: p for p in curve}
    assert by_share[0.0].quality == 1.0 and by_share[0.0].cost_per_1k == 11.0
    assert by_share[0.5].quality == 1.0 and by_share[0.5].cost_per_1k == 6.0  # the two sure ones are right
    assert by_share[1.0].quality == 0.5 and by_share[1.0].cost_per_1k == 1.0
    assert cheapest_clearing(curve, kept, deferred, confidence, _reaches(1.0)).student_share == 0.5


def _reaches(quality: float):
    """A point target on the blend's quality (compare.target_quality)."""
    return lambda blended, deferred: blended.mean(axis=1) >= quality - 1e-12


def test_cascade_quality_is_reported_out_of_sample() -> None:
    """Confidence carries no information here: a threshold tuned in sample keeps lucky rows and looks as good as
    the teacher, but rows answered by thresholds chosen on other folds show the real loss."""
    rng = np.random.default_rng(3)
    n = 200
    kept = (rng.random(n) < 0.6).astype(float)  # the student is right 60% of the time, whatever its confidence
    deferred = np.ones(n)
    noise = {"mean_token_logprob": rng.normal(size=n), "answer_logprob": rng.normal(size=n)}
    result = cross_fitted_cascade(kept, deferred, noise, _reaches(0.9), 1.0, 10.0)
    in_sample = cheapest_clearing(result.curve, kept, deferred, noise[result.confidence], _reaches(0.9))
    assert in_sample is not None and in_sample.quality >= 0.9
    assert result.folds == 5
    assert result.quality == pytest.approx(np.mean(result.blended))
    # Out of sample, each kept row is right only 60% of the time: the blend falls short of what it was tuned to.
    kept_rows = np.asarray(result.blended) != 1.0
    assert result.student_share > 0 and kept_rows.any()
    assert result.quality < 0.9


def test_cascade_prefers_the_informative_confidence() -> None:
    rng = np.random.default_rng(4)
    n = 120
    kept = (rng.random(n) < 0.7).astype(float)
    informative = kept + rng.normal(scale=0.1, size=n)  # high exactly where the student is right
    scores = {"mean_token_logprob": informative, "answer_logprob": rng.normal(size=n)}
    result = cross_fitted_cascade(kept, np.ones(n), scores, _reaches(0.98), 1.0, 10.0)
    assert result.confidence == "mean_token_logprob"
    assert result.student_share > 0.5 and result.quality >= 0.97


def test_monthly_cost_and_sensitivity() -> None:
    assert cost.monthly(0.5, 0.1, 2_000_000) == {"queries": 2_000_000, "teacher": 1000.0, "student": 200.0,
                                                 "saving": 800.0}
    rows = cost.sensitivity(9.0, 0.10, 0.01, 300_000)
    base = next(r for r in rows if r["teacher_price_factor"] == 1.0 and r["monthly_queries"] == 300_000)
    assert base["break_even_queries"] == pytest.approx(100_000) and base["payback_days"] == pytest.approx(10)
    cheaper_teacher = next(r for r in rows if r["teacher_price_factor"] == 0.5 and r["monthly_queries"] == 300_000)
    assert cheaper_teacher["break_even_queries"] == pytest.approx(9.0 / (0.04 / 1000))
    assert len(rows) == 9


def _measured(predictions: list[str], seconds: float, price: float, prompt_tokens: int) -> Measured:
    """A model measured at 1 and 4 requests in flight; at 4 it answers the test set in `seconds`."""
    rng = random.Random(len(predictions) + prompt_tokens)
    answers = [Answer(samples=[Sample(p, logprob=-rng.random())], prompt_tokens=prompt_tokens, completion_tokens=2,
                      latency_ms=rng.uniform(50, 500)) for p in predictions]
    n = len(predictions)
    points = [SweepPoint(1, n, seconds * 3, n / seconds / 3, {"p50": 90.0, "p95": 200.0, "p99": 250.0}, 0),
              SweepPoint(4, n, seconds, n / seconds, {"p50": 100.0, "p95": 300.0, "p99": 400.0}, 0,
                         [a.latency_ms for a in answers])]
    return Measured("m", "vLLM", price, answers, list(predictions), points)


@pytest.fixture
def report_dir(tmp_path: Path) -> tuple[Path, dict]:
    """A complete report from synthetic measurements of all four models."""
    rng = random.Random(0)
    gold = [rng.choice(LABELS) for _ in range(120)]

    def noisy(accuracy: float) -> list[str]:
        return [g if rng.random() < accuracy else rng.choice(LABELS) for g in gold]

    measured = {"teacher": _measured(noisy(0.9), 60, 2.0, 400), "adapter": _measured(noisy(0.8), 10, 1.0, 20),
                "merged": _measured(noisy(0.8), 6, 1.0, 20), "baseline": _measured(noisy(0.4), 30, 1.0, 400)}
    config = load_config(write_config(tmp_path / "c.yaml", study_config("m", DEMO_INPUTS)))
    metrics = build_metrics(config, measured, gold, LABELS_TASK,
                            {"labelling": 0.5, "training": 0.25, "total": 0.75}).to_json()
    latencies = {name: [a.latency_ms for a in m.answers] for name, m in measured.items()}
    write_reports(metrics, latencies, tmp_path, "synthetic")
    return tmp_path, metrics


def test_metrics_keep_the_foundation_keys_and_add_the_study(report_dir) -> None:
    _, metrics = report_dir
    for key in ("n_queries", "agreement", "cost_ratio", "break_even_queries", "teacher", "student"):
        assert key in metrics
    assert set(metrics["students"]) == {"adapter", "merged"} and metrics["baseline"]["quality"] < 0.7
    assert metrics["student"]["cost_per_1k_queries"] == pytest.approx(1.0 / 3600 / 12 * 1000)  # 120 q in 10 s
    assert metrics["student"]["concurrency"] == 4 and metrics["concurrency"]["teacher"] == 4
    low, high = metrics["agreement_ci"]
    assert low <= metrics["agreement"] <= high
    low, high = metrics["quality_diff_ci"]
    assert low <= metrics["quality_diff"] <= high
    # A student about 10 points below the teacher on 120 queries: the whole interval is under the -0.02 bar.
    assert high < -0.02 and metrics["recommendation"]["verdict"] == "keep_teacher"
    assert metrics["mcnemar"]["p_value"] < 1 and metrics["recommendation"]["rule"]
    assert len(metrics["cascade"]["curve"]) >= 2


def test_report_markdown_has_recommendation_table_and_statistics(report_dir) -> None:
    folder, _ = report_dir
    text = (folder / "report.md").read_text()
    for needle in ("**Verdict (", "student (merged)", "base, prompted", "McNemar", "| payback |",
                   "accuracy vs gold [95% CI]", "cost per 1k queries", "## Student per class",
                   "costed at (requests in flight)", "teacher $2.0/h per accelerator x 1 = $2/h for its fleet"):
        assert needle in text, needle
    # Every model here was measured at 1 and 4 in flight, 3x faster at 4: not shown saturated.
    assert "4 (still rising)" in text and "at most 0.0" in text and "Still rising at compare.max_concurrency" in text
    order = [text.index(h) for h in ("**Verdict (", "## Quality", "## Cost at saturation", "## Payback")]
    assert order == sorted(order), "verdict first, then quality, cost at saturation and payback"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_html_report_renders_in_headless_chromium(report_dir) -> None:
    from playwright.sync_api import sync_playwright

    folder, _ = report_dir
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((folder / "report.html").as_uri())
        images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.alt, i.complete, i.naturalWidth])")
        tables = page.locator("table").count()
        browser.close()
    assert errors == []
    assert len(images) == 5 and all(complete and width > 300 for _, complete, width in images), images
    assert tables >= 3


def test_durations_read_naturally() -> None:
    from distill.present import duration

    assert [duration(d) for d in (None, 0.01, 0.5, 3.25)] == ["never", "under an hour", "12 hours", "3.2 days"]


def test_macro_f1_counts_labels_predicted_but_absent_from_gold() -> None:
    """A student that answers 'c' where gold never has it gets F1 0 for 'c', and macro-F1 averages it in."""
    gold = ["a", "a", "b", "b"]
    predictions = ["a", "c", "b", "c"]
    report = class_report(predictions, gold, LABELS)
    assert set(report["per_class"]) == {"a", "b", "c"} and report["per_class"]["c"]["support"] == 0
    f1_a = f1_b = 2 * 1.0 * 0.5 / 1.5
    assert report["macro_f1"] == pytest.approx((f1_a + f1_b + 0.0) / 3)


def test_report_names_the_billed_token_prices_and_the_cached_share(tmp_path: Path) -> None:
    gold = ["billing", "refund"] * 10
    teacher = _measured(gold, 10, 0.0, 400)
    for answer in teacher.answers:
        answer.cached_tokens = 300
    measured = {"teacher": teacher, "adapter": _measured(gold, 5, 1.0, 20)}
    prices = {"teacher_price_per_hour": 0, "student_price_per_hour": 1, "train_price_per_hour": 1,
              "teacher_input_per_1m": 0.14, "teacher_cached_input_per_1m": 0.0042, "teacher_output_per_1m": 0.42}
    config = load_config(write_config(tmp_path / "c.yaml", study_config("m", DEMO_INPUTS, cost=prices)))
    metrics = build_metrics(config, measured, gold, LABELS_TASK, {"labelling": 0, "training": 0, "total": 0}
                            ).to_json()
    assert metrics["teacher"]["cached_tokens_per_query"] == 300
    assert metrics["teacher"]["cost_per_1k_queries"] == pytest.approx((100 * 0.14 + 300 * 0.0042 + 2 * 0.42) / 1e3)
    write_reports(metrics, {}, tmp_path, "billed")
    text = (tmp_path / "report.md").read_text()
    assert ("teacher tokens $0.14 per 1M input ($0.0042 cached), $0.42 per 1M output; 75% of the teacher's prompt "
            "tokens were served from its provider's cache") in text
    assert "Prices used: teacher per token," in text and "per accelerator" not in text, "no hourly fleet to price"
