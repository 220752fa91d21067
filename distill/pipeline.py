"""The pipeline: one stage by name, or `distill run`, which skips every stage whose content key is unchanged.

A run holds a lock on its run folder for its whole life, so two scheduled runs never overlap; the lock is an
OS file lock, released by the kernel when its holder dies, so a killed run never leaves a stale one behind.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distill.artifacts import MANIFEST, damaged_outputs, write_json
from distill.config import Config
from distill.errors import UserError
from distill.keys import config_key, stage_key

STAGES = ("generate", "filter", "train", "compare")
LOCK = "run.lock"


class LockedError(Exception):
    """Another process holds the run folder's lock."""


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
        raise UserError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    return stage_function(config, run_dir)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock, or raise `LockedError` naming the process that holds it."""
    from filelock import FileLock, Timeout

    run_dir.mkdir(parents=True, exist_ok=True)
    holder_file = run_dir / f"{LOCK}.holder.json"
    lock = FileLock(run_dir / LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = holder_file.read_text() if holder_file.exists() else "unknown"
        raise LockedError(f"{run_dir} is in use by another distill process: {holder.strip()}") from None
    try:
        holder_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                           "since": datetime.now(UTC).isoformat()}))
        yield
    finally:
        holder_file.unlink(missing_ok=True)
        lock.release()


@dataclass
class StageOutcome:
    stage: str
    action: str  # "ran", "skipped" (unchanged) or "kept" (current student kept, too little new data)
    reason: str
    seconds: float = 0.0


def _new_training_rows(run_dir: Path) -> int:
    from distill.artifacts import read_rows
    from student.train import TRAINED_IDS

    trained = set(json.loads((run_dir / "train" / TRAINED_IDS).read_text()))
    return sum(row["id"] not in trained for row in read_rows(run_dir / "filter" / "train.parquet"))


def decide(stage: str, config: Config, run_dir: Path, forced: bool) -> tuple[str, str]:
    """Whether a stage must run ("run"), is unchanged ("skipped"), or keeps the current student ("kept")."""
    if forced:
        return "run", "forced"
    manifest_path = run_dir / stage / MANIFEST
    if not manifest_path.exists():
        return "run", "no finished output"
    manifest = json.loads(manifest_path.read_text())
    damaged = damaged_outputs(run_dir / stage, manifest)
    if damaged:
        return "run", f"outputs changed or missing since it finished ({', '.join(damaged[:3])}); rerunning"
    if manifest.get("key") == stage_key(stage, config, run_dir):
        return "skipped", "config and inputs unchanged"
    threshold = config.student.retrain_min_new_rows
    if stage == "train" and threshold and manifest.get("config_key") == config_key(stage, config):
        new_rows = _new_training_rows(run_dir)
        if new_rows < threshold:
            return "kept", f"{new_rows} new training rows < student.retrain_min_new_rows={threshold}"
    return "run", "config or inputs changed"


@dataclass
class RunSummary:
    run_dir: str
    started_at: str
    stages: list[StageOutcome] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    finished_at: str | None = None

    @property
    def gates_passed(self) -> bool:
        return all(g["passed"] for g in self.gates)


def run_pipeline(config: Config, run_dir: Path, force: str | None = None, gates: tuple[str, ...] = (),
                 on_stage: Callable[[StageOutcome], None] | None = None) -> RunSummary:
    """Generate, filter, train and compare, skipping what is current; `force` reruns from that stage on."""
    from distill.gates import check_gates

    if force is not None and force not in STAGES:
        raise UserError(f"--force {force}: unknown stage; stages are {', '.join(STAGES)}")
    summary = RunSummary(run_dir=str(run_dir), started_at=datetime.now(UTC).isoformat())
    with run_lock(run_dir):
        for index, stage in enumerate(STAGES):
            forced = force is not None and index >= STAGES.index(force)
            action, reason = decide(stage, config, run_dir, forced)
            start = time.perf_counter()
            if action == "run":
                run_stage(stage, config, run_dir)
                action = "ran"
            outcome = StageOutcome(stage, action, reason, round(time.perf_counter() - start, 2))
            summary.stages.append(outcome)
            if on_stage is not None:
                on_stage(outcome)
        summary.metrics = json.loads((run_dir / "compare" / "metrics.json").read_text())
        summary.gates = check_gates(gates, summary.metrics)
        summary.finished_at = datetime.now(UTC).isoformat()
        write_json(run_dir / "summary.json", asdict(summary) | {"gates_passed": summary.gates_passed})
        if config.tracking.mlflow_uri:
            from distill.tracking import log_run

            log_run(config, run_dir, summary.metrics)
    return summary


def describe(summary: RunSummary) -> str:
    """One paragraph for a person reading the scheduler's log."""
    stages = ", ".join(f"{s.stage} {s.action}" + (f" ({s.seconds:.0f} s)" if s.action == "ran" else
                                                    f" ({s.reason})") for s in summary.stages)
    text = f"Run in {summary.run_dir}: {stages}."
    metrics = summary.metrics or {}
    if metrics:
        t, s = metrics["teacher"], metrics["student"]
        accuracy = (f" Student accuracy {s['accuracy']:.3f} vs teacher {t['accuracy']:.3f};"
                    if s.get("accuracy") is not None and t.get("accuracy") is not None else "")
        ratio = metrics.get("cost_ratio")
        even = metrics.get("break_even_queries")
        text += (f"{accuracy} agreement {metrics['agreement']:.3f}; the student costs "
                 + (f"{ratio:.3f}x the teacher per query" if ratio is not None else "an unknown share")
                 + (f" and pays back after {even:,.0f} queries." if even is not None else " and never pays back."))
    for gate in summary.gates:
        text += f" Gate {gate['gate']}: {'passed' if gate['passed'] else 'FAILED'} ({gate['value']:.4g})."
    return text
