"""`distill status`: which stages of a run folder are complete, stale, damaged or missing, and what each cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill import cost as costs
from distill.artifacts import MANIFEST, damaged_outputs
from distill.config import Config, CostConfig
from distill.keys import stage_key
from distill.pipeline import STAGES


def stage_cost(stage: str, manifest: dict[str, Any]) -> float:
    """What the stage cost at the prices in the config it ran with."""
    price = CostConfig.model_validate(manifest["config"]["cost"])
    timings = manifest.get("timings", {})
    if stage == "generate":
        usage = manifest.get("usage", {})
        return costs.labelling_cost(price, timings.get("teacher", 0.0), usage.get("prompt_tokens", 0),
                                    usage.get("completion_tokens", 0))
    if stage == "train":
        return costs.training_cost(price, manifest["seconds"])
    if stage == "compare":
        return (timings.get("teacher", 0.0) * price.teacher_price_per_hour
                + timings.get("student", 0.0) * price.student_price_per_hour) / costs.SECONDS_PER_HOUR
    return 0.0


def stage_states(run_dir: Path, config: Config | None = None) -> list[dict[str, Any]]:
    states = []
    for stage in STAGES:
        folder = run_dir / stage
        entry: dict[str, Any] = {"stage": stage, "state": "missing", "finished_at": None, "seconds": None,
                                 "cost": None}
        if (folder / MANIFEST).exists():
            manifest = json.loads((folder / MANIFEST).read_text())
            entry.update(finished_at=manifest["finished_at"], seconds=manifest["seconds"],
                         cost=stage_cost(stage, manifest), state="complete")
            if damaged_outputs(folder, manifest):
                entry["state"] = "damaged"
            elif config is not None and manifest.get("key") != stage_key(stage, config, run_dir):
                entry["state"] = "stale"
        elif folder.exists():
            entry["state"] = "unfinished"
        states.append(entry)
    return states
