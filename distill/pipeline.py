"""The whole pipeline, stage after stage, on one run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.config import Config

STAGES = ("generate", "filter", "train", "compare")


def default_run_dir(config: Config) -> Path:
    return Path("runs") / config.name


def run_stage(stage: str, config: Config, run_dir: Path) -> dict[str, Any]:
    """Run one stage by name; heavy libraries are imported only here, when a stage really runs."""
    if stage == "generate":
        from teacher.generate import generate as stage_function
    elif stage == "filter":
        from distill.filter import filter_stage as stage_function
    elif stage == "train":
        from student.train import train as stage_function
    elif stage == "compare":
        from distill.compare import compare as stage_function
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return stage_function(config, run_dir)

