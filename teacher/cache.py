"""A durable, content-addressed store of teacher answers, so no request is paid for twice.

SQLite in WAL mode with synchronous=FULL: an answer is on disk before the next request is accounted, so a
process killed at any moment loses at most the requests in flight, and a rerun sends only what is missing.
Failed requests are not stored, so a rerun retries them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from teacher.client import Answer


def request_key(model: str, request: dict[str, Any]) -> str:
    payload = json.dumps({"model": model, "request": request}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")

    def get(self, key: str) -> Answer | None:
        row = self.db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return Answer.from_row(json.loads(row[0])) if row else None

    def put(self, key: str, answer: Answer) -> None:
        if answer.error is None:
            self.db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(answer.as_row())))

    def close(self) -> None:
        self.db.close()
