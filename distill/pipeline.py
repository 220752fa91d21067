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
from functools import cache
from pathlib import Path
from typing import Any

from distill.artifacts import damaged_outputs, read_batches, write_json
from distill.config import Config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.models import check_models
from distill.present import quality_name
from distill.stages import Manifest, Stage, config_key, main_process, stage_key, unfinished

STAGES = ("generate", "filter", "train", "compare")


class LockedError(Exception):
    """Another process holds the run folder's lock."""


def default_run_dir(config: Config) -> Path:
    return Path("runs") / config.name


@cache
def stage_registry() -> dict[str, Stage]:
    """Each stage's own declaration, found where the stage is written."""
    from distill.compare.stage import STAGE as compare
    from distill.filter.stage import STAGE as filter_
    from student.train import STAGE as train
    from teacher.generate import STAGE as generate

    return {stage.name: stage for stage in (generate, filter_, train, compare)}


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise UserError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    return stage_registry()[name]


def check_chain(names: tuple[str, ...], layout: RunLayout) -> None:
    """Before the first of `names` runs: every stage each consumes runs before it among `names`, or has finished
    with what it declares it produces. All problems in one error, each naming the stage to run."""
    problems, ahead = [], set()
    for name in names:
        for needed in get_stage(name).consumes:
            why = None if needed in ahead else unfinished(get_stage(needed), layout)
            if why is not None:
                problems.append(f"{name} consumes the {needed} stage, which {why}; run `distill {needed}` first")
        ahead.add(name)
    if problems:
        raise UserError("; ".join(problems))


@contextmanager
def run_lock(layout: RunLayout) -> Iterator[None]:
    """Hold the run folder's lock, or raise `LockedError` naming the process that holds it. In a multi-process
    launch only the first process takes it: the others are its helpers, not rival runs."""
    from filelock import FileLock, Timeout

    if not main_process():
        yield
        return

    lock = FileLock(layout.lock, timeout=0)
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        holder = layout.lock_holder.read_text() if layout.lock_holder.exists() else "unknown"
        raise LockedError(f"{layout.root} is in use by another distill process: {holder.strip()}") from None
    except OSError as exc:  # a file where the folder belongs, a read-only place, a full disk
        raise UserError(f"{layout.root}: cannot be used as the run folder ({exc.strerror or exc}); give --run-dir "
                        "a folder this user can write") from exc
    try:
        _write_holder(layout, {"pid": os.getpid(), "host": socket.gethostname(),
                               "since": datetime.now(UTC).isoformat()})
        yield
    finally:
        layout.lock_holder.unlink(missing_ok=True)
        lock.release()


def _write_holder(layout: RunLayout, holder: dict[str, Any]) -> None:
    layout.lock_holder.write_text(json.dumps(holder))


def mark_running(layout: RunLayout, stage: str) -> None:
    """Record in the lock holder's note which stage this process is running, for `distill status`."""
    if main_process() and layout.lock_holder.exists():
        _write_holder(layout, json.loads(layout.lock_holder.read_text()) | {"stage": stage})


def running_stage(layout: RunLayout) -> str | None:
    """The stage a live process on this machine runs in the folder (from its lock note), else None. The OS lock
    itself cannot be asked without taking it, which would make a starting run fail as locked."""
    try:
        holder = json.loads(layout.lock_holder.read_text())
    except (OSError, ValueError):
        return None
    if holder.get("host") != socket.gethostname() or not _alive(int(holder.get("pid", 0))):
        return None  # a note left by a killed run (the kernel released its lock)
    return holder.get("stage")


def _alive(pid: int) -> bool:
    import psutil

    return pid > 0 and psutil.pid_exists(pid)  # pid 0 (no holder recorded) is the kernel's, never a run's


@dataclass
class StageOutcome:
    stage: str
    action: str  # "ran", "skipped" (unchanged) or "kept" (current student kept, too little new data)
    reason: str
    seconds: float = 0.0


@dataclass(frozen=True)
class StageState:
    """Where a stage of a run folder stands, and the manifest that says so."""

    state: str  # "complete", "partial", "stale", "damaged", "unfinished" or "missing"
    reason: str
    manifest: Manifest | None = None


def stage_state(stage: Stage, config: Config | None, layout: RunLayout) -> StageState:
    """The one place that decides whether a stage's outputs are current: `run` and `status` both ask here."""
    path = layout.manifest(stage.name)
    if not path.exists():
        return StageState("unfinished" if path.parent.exists() else "missing", "no finished output")
    manifest = json.loads(path.read_text())
    damaged = damaged_outputs(path.parent, manifest)
    if damaged:
        return StageState("damaged", f"outputs changed or missing since it finished ({', '.join(damaged[:3])})",
                          manifest)
    if config is not None and manifest.get("key") != stage_key(stage, config, layout):
        return StageState("stale", "config or inputs changed", manifest)
    if manifest.get("partial"):  # finished, but with rows a rerun asks for again (teacher/generate.py)
        return StageState("partial", f"partial: {manifest['partial']}; rerunning asks for those rows again",
                          manifest)
    return StageState("complete", "config and inputs unchanged", manifest)


def _new_training_rows(layout: RunLayout) -> int:
    trained = set(json.loads(layout.train.trained_ids.read_text()))
    return sum(row["id"] not in trained for batch in read_batches(layout.filter.train, columns=["id"])
               for row in batch)


def decide(stage: Stage, config: Config, layout: RunLayout, forced: bool, may_keep: bool = True) -> tuple[str, str]:
    """Whether a stage must run ("run"), is unchanged ("skipped"), or keeps the current student ("kept"; only
    where `may_keep`)."""
    if forced:
        return "run", "forced"
    state = stage_state(stage, config, layout)
    if state.state == "complete":
        return "skipped", state.reason
    threshold = config.student.retrain_min_new_rows if may_keep else 0
    if (stage.keeps_outputs and threshold and state.state == "stale" and state.manifest is not None
            and state.manifest.get("config_key") == config_key(stage, config)):
        new_rows = _new_training_rows(layout)
        if new_rows < threshold:
            return "kept", f"{new_rows} new training rows < student.retrain_min_new_rows={threshold}"
    return "run", state.reason + ("; rerunning" if state.state == "damaged" else "")


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


def run_pipeline(config: Config, layout: RunLayout, force: str | None = None, gates: tuple[str, ...] = (),
                 on_stage: Callable[[StageOutcome], None] | None = None, may_keep_student: bool = True,
                 set_up: Callable[[], None] | None = None) -> RunSummary:
    """Generate, filter, train and compare, skipping what is current; `force` reruns from that stage on.
    `may_keep_student=False` turns off student.retrain_min_new_rows: a study's variant or learning-curve point
    measures its own rows, never a student trained on others. `set_up` runs under the folder's lock before any
    stage (a study links a variant's shared folders there)."""
    from distill.compare.gates import check_gates, parse_gate

    if force is not None:
        get_stage(force)
    for gate in gates:  # a typo in a gate must not wait for hours of stages to surface
        parse_gate(gate)
    check_models(config)  # a student that cannot load must not wait until every label is paid for
    check_chain(STAGES, layout)
    summary = RunSummary(run_dir=str(layout.root), started_at=datetime.now(UTC).isoformat())
    with run_lock(layout):
        if set_up is not None:
            set_up()
        for index, name in enumerate(STAGES):
            forced = force is not None and index >= STAGES.index(force)
            outcome = _advance(get_stage(name), config, layout, forced, may_keep_student)
            summary.stages.append(outcome)
            if on_stage is not None:
                on_stage(outcome)
        summary.metrics = json.loads(layout.compare.metrics.read_text())
        summary.gates = check_gates(gates, summary.metrics)
        summary.finished_at = datetime.now(UTC).isoformat()
        write_json(layout.summary, asdict(summary) | {"gates_passed": summary.gates_passed})
        if config.tracking.trackers:
            from distill.tracking import log_summary

            log_summary(config, layout, summary.metrics)
    return summary


def _advance(stage: Stage, config: Config, layout: RunLayout, forced: bool, may_keep: bool) -> StageOutcome:
    action, reason = decide(stage, config, layout, forced, may_keep)
    start = time.perf_counter()
    if action == "run":
        from distill.console import stage_log

        mark_running(layout, stage.name)
        with stage_log(stage.name, layout.stage_log(stage.name)):
            stage.run(config, layout)
        action = "ran"
    return StageOutcome(stage.name, action, reason, round(time.perf_counter() - start, 2))


def describe(summary: RunSummary) -> str:
    """One paragraph for a person reading the scheduler's log."""
    from distill.compare.gates import describe_gate

    stages = ", ".join(f"{s.stage} {s.action}" + (f" ({s.seconds:.0f} s)" if s.action == "ran" else
                                                    f" ({s.reason})") for s in summary.stages)
    text = f"Run in {summary.run_dir}: {stages}."
    metrics = summary.metrics or {}
    if metrics:
        t, s = metrics["teacher"], metrics["student"]
        name = quality_name(metrics)
        quality = (f" Student {name} {s['quality']:.3f} vs teacher {t['quality']:.3f};"
                   if s.get("quality") is not None and t.get("quality") is not None else "")
        agreement = "n/a" if metrics.get("agreement") is None else f"{metrics['agreement']:.3f}"
        ratio = metrics.get("cost_ratio")
        even = metrics.get("break_even_queries")
        text += (f" Verdict: {metrics['recommendation']['verdict']}.{quality} agreement {agreement}; the student "
                 + (f"costs {ratio:.3f}x the teacher per query" if ratio is not None else "has no cost ratio")
                 + (f" and pays back after {even:,.0f} queries." if even is not None else " and never pays back."))
    for gate in summary.gates:
        text += f" G{describe_gate(gate)[1:]}."
    return text
