"""Content keys for stages: a stage whose config sections and inputs hash the same need not run again.

A stage's key covers the config sections it reads and the hashes of what it reads from disk: the input files
for generate, and the recorded outputs of the stage before it otherwise. So a new filter threshold changes the
filter key, whose new outputs change the train key, and so on down; generate keeps its key and is skipped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from distill.config import Config

UPSTREAM = {"generate": None, "filter": "generate", "train": "filter", "compare": "train"}


def _sections(stage: str, config: Config) -> dict[str, Any]:
    dump = config.model_dump(mode="json")
    names = {
        "generate": ("task", "data", "teacher"),
        "filter": ("task", "data", "filter"),
        "train": ("task", "student"),
        "compare": ("task", "data", "teacher", "student", "compare", "cost"),
    }[stage]
    sections = {name: dump[name] for name in names}
    if stage == "train":
        sections["student_serving"] = dump["compare"]["student_serving"]  # merged serving needs a merged copy
    return sections


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def config_key(stage: str, config: Config) -> str:
    """The part of a stage's key that comes from the config alone."""
    return digest(_sections(stage, config))


def stage_key(stage: str, config: Config, run_dir: Path) -> str:
    from distill.artifacts import MANIFEST, sha256_file

    upstream = UPSTREAM[stage]
    if upstream is None:
        files = [p for p in (config.data.inputs, config.data.test) if p is not None]
        inputs: Any = {str(p): sha256_file(p) for p in files}
    else:
        manifest_path = run_dir / upstream / MANIFEST
        inputs = json.loads(manifest_path.read_text()).get("outputs") if manifest_path.exists() else None
    return digest({"config": config_key(stage, config), "inputs": inputs})
