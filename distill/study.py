"""`distill study`: several student settings of one config compared in one table and one plot.

The main student runs in the run folder; each variant runs in `variants/<name>/`, whose generate and filter
folders link to the main ones, so the teacher labels once and every student learns from the same rows.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.artifacts import write_json, write_text
from distill.config import Config
from distill.pipeline import RunSummary, StageOutcome, run_pipeline

SHARED_STAGES = ("generate", "filter")


def variant_dir(run_dir: Path, name: str) -> Path:
    folder = run_dir / "variants" / name
    folder.mkdir(parents=True, exist_ok=True)
    for stage in SHARED_STAGES:
        link = folder / stage
        if not link.is_symlink():
            link.symlink_to(Path("..", "..", stage), target_is_directory=True)
    return folder


def study_row(name: str, config: Config, metrics: dict[str, Any]) -> dict[str, Any]:
    student, lora = config.student, config.student.lora
    return {
        "variant": name,
        "student_model": student.model,
        "settings": f"r={lora.r} alpha={lora.alpha} epochs={student.epochs:g} lr={student.learning_rate:g}",
        "served_as": metrics["student"]["served_as"],
        "accuracy": metrics["student"]["accuracy"],
        "accuracy_ci": metrics["student"]["accuracy_ci"],
        "agreement": metrics["agreement"],
        "queries_per_s": metrics["student"]["queries_per_s"],
        "cost_per_1k_queries": metrics["student"]["cost_per_1k_queries"],
        "break_even_queries": metrics["break_even_queries"],
    }


def run_study(config: Config, run_dir: Path, on_stage: Callable[[StageOutcome], None] | None = None
              ) -> dict[str, Any]:
    runs: dict[str, tuple[Config, RunSummary]] = {"main": (config, run_pipeline(config, run_dir, on_stage=on_stage))}
    for name in config.variants:
        variant = config.variant(name)
        runs[name] = (variant, run_pipeline(variant, variant_dir(run_dir, name), on_stage=on_stage))
    teacher = runs["main"][1].metrics["teacher"]
    study = {"teacher": {k: teacher[k] for k in ("model", "accuracy", "queries_per_s", "cost_per_1k_queries")},
             "variants": [study_row(name, cfg, summary.metrics) for name, (cfg, summary) in runs.items()]}
    write_json(run_dir / "study.json", study)
    markdown_text = study_markdown(study, config.name)
    write_text(run_dir / "study.md", markdown_text)
    write_text(run_dir / "study.html", study_html(markdown_text, config.name, study_plot(study)))
    return study


def cell(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else (f"{value:,.{digits}f}" if isinstance(value, float) else str(value))


def study_markdown(study: dict[str, Any], name: str) -> str:
    teacher = study["teacher"]
    lines = [f"# {name}: student settings compared", "",
             f"Teacher {teacher['model']}: accuracy {cell(teacher['accuracy'])}, "
             f"${cell(teacher['cost_per_1k_queries'], 5)} per 1k queries.", "",
             "| variant | student | settings | served as | accuracy [95% CI] | agreement | queries/s | "
             "cost per 1k ($) | break-even queries |", "|---|---|---|---|---|---|---|---|---|"]
    for row in study["variants"]:
        interval = row["accuracy_ci"]
        accuracy = cell(row["accuracy"]) + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
        lines.append(f"| {row['variant']} | {row['student_model']} | {row['settings']} | {row['served_as']} | "
                     f"{accuracy} | {cell(row['agreement'])} | {cell(row['queries_per_s'], 2)} | "
                     f"{cell(row['cost_per_1k_queries'], 5)} | {cell(row['break_even_queries'], 0)} |")
    return "\n".join(lines) + "\n"


def study_plot(study: dict[str, Any]) -> bytes:
    from distill.report import new_figure, to_png

    use_accuracy = all(row["accuracy"] is not None for row in study["variants"])
    fig, ax = new_figure()
    points = [("teacher", study["teacher"]["cost_per_1k_queries"],
               study["teacher"]["accuracy"] if use_accuracy else 1.0)]
    points += [(row["variant"], row["cost_per_1k_queries"], row["accuracy"] if use_accuracy else row["agreement"])
               for row in study["variants"]]
    for label, cost, quality in points:
        if cost is None or quality is None:
            continue
        ax.scatter(cost, quality, s=40, zorder=3)
        ax.annotate(label, (cost, quality), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set(xlabel="cost per 1k queries ($)", ylabel="accuracy" if use_accuracy else "agreement with the teacher",
           title="Students against the teacher")
    ax.grid(alpha=0.3)
    return to_png(fig)


def study_html(markdown_text: str, name: str, png: bytes) -> str:
    import markdown as md

    image = f'<img alt="students against the teacher" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)}: study</title>'
            "<style>body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}"
            "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3rem .6rem}img{max-width:100%}"
            f"</style></head><body>{md.markdown(markdown_text, extensions=['tables'])}{image}</body></html>\n")
