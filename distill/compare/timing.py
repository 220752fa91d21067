"""The teacher's throughput sweep, kept beside its answers in the labelling cache.

A study's variants, its learning-curve points and a rerun whose student changed all ask the same teacher the same
test queries: the answers come from the cache, and so does the timing, instead of serving a large model again only
to time it. A timing is reused only for the same teacher (its fingerprint is in every request key), the same
queries in the same order, the same sweep settings and the same `cost.hardware`; `compare.retime_teacher: true`
times it afresh. Reports say when a reused timing was measured.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from distill.compare.measure import SweepPoint
from distill.config import Config

_TABLE = "CREATE TABLE IF NOT EXISTS teacher_timings (key TEXT PRIMARY KEY, timing TEXT NOT NULL)"


class StoredTiming(msgspec.Struct):
    measured_at: str
    points: list[dict]


def timing_key(config: Config, request_keys: list[str]) -> str:
    compare = config.compare
    payload = {"requests": request_keys, "hardware": config.cost.hardware,
               "sweep": [compare.max_concurrency, compare.latency_slo_ms, compare.max_failed_share]}
    return hashlib.sha256(msgspec.json.encode(payload, order="sorted")).hexdigest()


def _connect(cache: Path) -> sqlite3.Connection:
    db = sqlite3.connect(cache, isolation_level=None)
    db.execute(_TABLE)
    return db


def load_timing(cache: Path, key: str) -> tuple[list[SweepPoint], str] | None:
    """The stored sweep and when it was measured, or None."""
    if not cache.exists():
        return None
    db = _connect(cache)
    try:
        found = db.execute("SELECT timing FROM teacher_timings WHERE key = ?", (key,)).fetchone()
    finally:
        db.close()
    if found is None:
        return None
    stored = msgspec.json.decode(found[0], type=StoredTiming)
    return [SweepPoint(**point) for point in stored.points], stored.measured_at


def store_timing(cache: Path, key: str, points: list[SweepPoint]) -> None:
    stored = StoredTiming(datetime.now(UTC).isoformat(timespec="seconds"), [asdict(p) for p in points])
    db = _connect(cache)
    try:
        db.execute("INSERT OR REPLACE INTO teacher_timings VALUES (?, ?)", (key, msgspec.json.encode(stored)))
    finally:
        db.close()
