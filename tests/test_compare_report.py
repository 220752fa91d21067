"""Compare's statistics, cascade, cost model and report on fixed numbers, and the HTML in a real browser."""

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill.compare import cost
from distill.compare.cascade import cascade_curve, cheapest_meeting
from distill.compare.report import write_reports
from distill.compare.stage import Measured, build_metrics
from distill.compare.stats import bootstrap_interval, class_report, confusion, mcnemar
from distill.config import load_config
from distill.tasks import make_task
from distill.tasks.classification import ClassificationSettings
from helpers import DEMO_INPUTS, study_config, write_config
from teacher.client import Answer, Sample

LABELS = ["a", "b", "c"]
LABELS_TASK = make_task(ClassificationSettings(instruction="Classify.", labels=LABELS))


def test_bootstrap_interval_covers_the_true_share() -> None:
    rng = np.random.default_rng(1)
    trials, covered = 100, 0
    for trial in range(trials):
        sample = rng.random(200) < 0.7
        low, high = bootstrap_interval(sample.tolist(), seed=trial, resamples=1000)
        covered += low <= 0.7 <= high
    assert 0.88 <= covered / trials <= 0.995


def test_bootstrap_interval_edge_cases() -> None:
    assert bootstrap_interval([]) is None
    assert bootstrap_interval([True, True, True]) == [1.0, 1.0]


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
    student = ["a", "b", "c", "a"]
    teacher = ["a", "a", "c", "b"]
    gold = ["a", "a", "c", "b"]
    confidence = [-0.1, -2.0, -0.5, -3.0]
    curve = cascade_curve(student, teacher, gold, confidence, student_per_1k=1.0, teacher_per_1k=10.0,
                          quality=LABELS_TASK.score)
    by_share = {p["student_share"]: p for p in curve}
    assert by_share[0.0]["quality"] == 1.0 and by_share[0.0]["cost_per_1k"] == 11.0
    assert by_share[0.5]["quality"] == 1.0 and by_share[0.5]["cost_per_1k"] == 6.0  # the two sure ones are right
    assert by_share[1.0]["quality"] == 0.5 and by_share[1.0]["cost_per_1k"] == 1.0
    assert cheapest_meeting(curve, 1.0)["student_share"] == 0.5
    assert cheapest_meeting(curve, None) is None


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
    rng = random.Random(len(predictions) + prompt_tokens)
    answers = [Answer(samples=[Sample(p, logprob=-rng.random())], prompt_tokens=prompt_tokens, completion_tokens=2,
                      latency_ms=rng.uniform(50, 500)) for p in predictions]
    return Measured("m", "vLLM", answers, list(predictions), seconds, price)


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
    metrics = build_metrics(config, measured, gold, LABELS_TASK, {"labelling": 0.5, "training": 0.25, "total": 0.75})
    latencies = {name: [a.latency_ms for a in m.answers] for name, m in measured.items()}
    write_reports(metrics, latencies, tmp_path, "synthetic")
    return tmp_path, metrics


def test_metrics_keep_the_foundation_keys_and_add_the_study(report_dir) -> None:
    _, metrics = report_dir
    for key in ("n_queries", "agreement", "cost_ratio", "break_even_queries", "teacher", "student"):
        assert key in metrics
    assert set(metrics["students"]) == {"adapter", "merged"} and metrics["baseline"]["accuracy"] < 0.7
    assert metrics["student"]["cost_per_1k_queries"] == pytest.approx(1.0 / 3600 / 12 * 1000)
    low, high = metrics["agreement_ci"]
    assert low <= metrics["agreement"] <= high
    assert metrics["mcnemar"]["p_value"] < 1 and metrics["recommendation"]
    assert len(metrics["cascade"]["curve"]) >= 2


def test_report_markdown_has_recommendation_table_and_statistics(report_dir) -> None:
    folder, _ = report_dir
    text = (folder / "report.md").read_text()
    for needle in ("**Recommendation.**", "student (merged)", "base, prompted", "McNemar", "| payback |",
                   "accuracy vs gold [95% CI]", "cost per 1k queries", "## Student per class"):
        assert needle in text, needle


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
