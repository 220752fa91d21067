"""`distill status`: which stages of a run folder are complete, partial, stale, damaged, missing or running,
and what each cost."""

from __future__ import annotations

from typing import Any

from distill.config import Config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.pipeline import STAGES, get_stage, running_stage, stage_state
from distill.stages import Manifest, Stage


def stage_states(layout: RunLayout, config: Config | None = None) -> list[dict[str, Any]]:
    """Each stage's state; "running" where a live process holds the folder's lock and runs that stage."""
    if not layout.root.is_dir():
        raise UserError(f"{layout.root}: no such run folder")
    markers = [layout.stage_dir(name) for name in STAGES] + [layout.lock, layout.summary]
    if not any(path.exists() for path in markers):
        raise UserError(f"{layout.root}: not a run folder (no {', '.join(f'{n}/' for n in STAGES)}, run.lock or "
                        "summary.json inside); give the folder a run wrote, e.g. runs/<name>")
    running = running_stage(layout)
    states = []
    for name in STAGES:
        state = stage_state(get_stage(name), config, layout)
        manifest = state.manifest or {}
        states.append({"stage": name, "state": "running" if name == running else state.state,
                       "finished_at": manifest.get("finished_at"),
                       "seconds": manifest.get("seconds"),
                       "cost": _cost(get_stage(name), manifest)})
    return states


def _cost(stage: Stage, manifest: Manifest) -> float | None:
    """What the stage cost at the prices it ran with; None where it has not finished."""
    if not manifest:
        return None
    return stage.cost(manifest) if stage.cost is not None else 0.0
