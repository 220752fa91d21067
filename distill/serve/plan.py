"""What compare decided, as `distill serve` runs it: the mode, and for a cascade its threshold and confidence
measure, read from `compare/metrics.json` and never typed again."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from distill.config import Config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.stages import read_manifest

Mode = Literal["student", "teacher", "cascade", "shadow"]
MODES: tuple[str, ...] = ("student", "teacher", "cascade", "shadow")


@dataclass(frozen=True)
class Plan:
    mode: str
    headline: str  # how compare served the student it chose: "merged" or "adapter"
    verdict: str
    confidence: str | None = None  # the cascade's measure, distill/compare/cascade.py CONFIDENCE_KINDS
    threshold: float | None = None  # the student answers where its confidence is at least this

    @property
    def uses_student(self) -> bool:
        return self.mode != "teacher"

    @property
    def uses_teacher(self) -> bool:
        return self.mode != "student"


def _check_same_study(config: Config, layout: RunLayout) -> None:
    """The threshold belongs to the task and student compare measured: refuse another one."""
    measured = read_manifest(layout, "compare").get("config", {})
    current = config.model_dump(mode="json")
    changed = [section for section in ("task", "student") if measured.get(section) != current[section]]
    if changed:
        raise UserError(f"{layout.compare.folder}: compare measured another {' and '.join(changed)} config than "
                        f"this one; run `distill compare -c CONFIG` (or `distill run`) before serving")


def load_plan(config: Config, layout: RunLayout, mode: str | None = None) -> Plan:
    """The plan from compare's outputs; `mode` None takes compare's verdict (cascade where it found one)."""
    _check_same_study(config, layout)
    metrics = json.loads(layout.compare.metrics.read_text(encoding="utf-8"))
    cascade = metrics.get("cascade") or {}
    verdict = metrics.get("recommendation", {}).get("verdict", "")
    found = cascade.get("confidence") is not None and cascade.get("threshold") is not None
    if mode is None:  # as compare recommends; keep_teacher and insufficient_evidence keep the teacher
        mode = {"cascade": "cascade", "distil": "student"}.get(verdict, "teacher")
    if mode not in MODES:
        raise UserError(f"--mode {mode}: choose one of {', '.join(MODES)}")
    if mode != "student" and not config.teacher.live:
        raise UserError(f"--mode {mode} needs a live teacher, and this config has recorded answers alone "
                        "(teacher.recorded); set teacher.model or teacher.url, or serve with --mode student")
    if mode == "cascade" and not found:
        raise UserError(f"{layout.compare.metrics}: compare found no cascade threshold that reaches the bar "
                        "(cascade.threshold is null); serve with --mode student, teacher or shadow")
    return Plan(mode, metrics.get("headline", "adapter"), verdict,
                cascade.get("confidence") if found else None, cascade.get("threshold") if found else None)
