"""`distill study`: several student settings of one config compared in one table and one plot, and a
learning curve over label budgets.

The main student runs in the run folder; each variant runs in `variants/<name>/`, whose generate and filter
folders link to the main ones, so the teacher labels once and every student learns from the same rows; a variant
that overrides `filter` links generate only and filters the same labels its own way; one that overrides
`teacher.samples` or `temperature` labels again in a generate folder of its own, through the main run's cache. Each
learning-curve point runs in `variants/labels-<N>/`, whose generate folder links to the main one: it filters
the same labelled pool down to the first N kept rows (nested subsets), so labels are paid for once.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from distill.artifacts import write_json
from distill.config import Config
from distill.layout import RunLayout
from distill.pipeline import RunSummary, StageOutcome, run_pipeline
from distill.study.curve import run_learning_curve
from distill.study.folders import link_shared_stages, shared_stages, trained_rows
from distill.study.report import write_study_report


def _flat(override: dict[str, Any], prefix: str = "") -> list[str]:
    return [item for key, value in override.items()
            for item in (_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}={value}"])]


def settings_text(config: Config, override: dict[str, Any]) -> str:
    """The main settings, then every other key the variant overrides (distill_weight, prompt_format, ...)."""
    student, lora = config.student, config.student.lora
    shown = f"r={lora.r} alpha={lora.alpha} epochs={student.epochs:g} lr={student.learning_rate:g}"
    covered = {"lora.r", "lora.alpha", "epochs", "learning_rate"}
    return " ".join([shown, *(item for item in _flat(override) if item.split("=")[0] not in covered)])


def study_row(name: str, config: Config, metrics: dict[str, Any], override: dict[str, Any] | None = None,
              train_rows: int | None = None) -> dict[str, Any]:
    student = config.student
    return {
        "variant": name,
        "student_model": student.model,
        "settings": settings_text(config, override or {}),
        "train_rows": train_rows,
        "served_as": metrics["student"]["served_as"],
        "verdict": metrics["recommendation"]["verdict"],
        "quality": metrics["student"].get("quality"),
        "quality_ci": metrics["student"].get("quality_ci"),
        "quality_diff_ci": metrics.get("quality_diff_ci"),
        "agreement": metrics["agreement"],
        "agreement_ci": metrics.get("agreement_ci"),
        "concurrency": metrics["student"].get("concurrency"),
        "queries_per_s": metrics["student"].get("queries_per_s"),
        "cost_per_1k_queries": metrics["student"].get("cost_per_1k_queries"),
        "break_even_queries": metrics["break_even_queries"],
    }


def run_study(config: Config, layout: RunLayout, on_stage: Callable[[StageOutcome], None] | None = None
              ) -> dict[str, Any]:
    runs: dict[str, tuple[Config, RunSummary, RunLayout]] = {
        "main": (config, run_pipeline(config, layout, on_stage=on_stage), layout)}
    for name in config.variants:
        variant = config.variant(name)
        folder, shared = layout.variant(name), shared_stages(config, variant)
        runs[name] = (variant, run_pipeline(variant, folder, on_stage=on_stage, may_keep_student=False,
                                            set_up=partial(link_shared_stages, folder, shared)), folder)
    curve = run_learning_curve(config, layout, runs["main"][1], on_stage) if config.study.label_counts else None
    main = runs["main"][1].metrics
    teacher = main["teacher"]
    study = {"quality_name": main["task"]["quality_name"],
             "teacher": {k: teacher.get(k) for k in ("model", "quality", "concurrency", "queries_per_s",
                                                     "cost_per_1k_queries")},
             "variants": [study_row(name, cfg, summary.metrics, config.variants.get(name), trained_rows(folder))
                          for name, (cfg, summary, folder) in runs.items()],
             "learning_curve": curve}
    write_json(layout.root / "study.json", study)
    write_study_report(study, config.name, layout.root)
    return study
