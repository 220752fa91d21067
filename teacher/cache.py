"""A durable, content-addressed store of teacher answers, so no request is paid for twice.

SQLite in WAL mode with synchronous=FULL. Answers are committed in small groups (every 50 ms or 256 answers) by a
thread of their own, off the event loop's path, at most 8 groups behind: a process killed at any moment loses at
most the requests in flight and the groups not yet committed, and a rerun sends only what is missing. Failed
requests are not stored, so a rerun retries them.

A key covers the teacher's fingerprint (which weights, dtype, quantization, server options: teacher/fingerprint.py),
the request as sent with a placeholder for the row's text, and the text: another teacher never reuses an answer.
"""

from __future__ import annotations

import hashlib
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from distill.errors import UserError
from teacher.client import Answer

GROUP_SECONDS = 0.05
GROUP_ANSWERS = 256
GROUPS_BEHIND = 8  # groups handed over but not yet committed, at most
_LOOKUP_BATCH = 900  # below SQLite's oldest limit on bound parameters (999)
_encode = msgspec.json.Encoder().encode


class CacheFailed(UserError):
    """The commit thread met an error (disk full, I/O error): what it committed is kept, nothing more can be."""


def key_prefix(fingerprint: Any, request_template: dict[str, Any]) -> bytes:
    """What every key of one run shares: the teacher's fingerprint and the request with its text left out."""
    payload = msgspec.json.encode({"fingerprint": fingerprint, "request": request_template}, order="sorted")
    return hashlib.sha256(payload).digest()


def request_key(prefix: bytes, text: str) -> str:
    return hashlib.sha256(prefix + text.encode()).hexdigest()


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
    return db


def read_answers(path: Path, keys: list[str]) -> dict[str, Answer]:
    """Answers to `keys` in another owner's cache, read without writing to it (no file, no table created where
    there is none): a later stage reads generate's labels this way."""
    if not path.is_file():
        return {}
    db = sqlite3.connect(path, isolation_level=None)
    try:
        return _lookup(db, keys)
    except sqlite3.OperationalError:  # no answers table: nothing was ever stored there
        return {}
    finally:
        db.close()


def _lookup(db: sqlite3.Connection, keys: list[str]) -> dict[str, Answer]:
    found = {}
    for start in range(0, len(keys), _LOOKUP_BATCH):
        batch = keys[start:start + _LOOKUP_BATCH]
        marks = ",".join("?" * len(batch))
        for key, raw in db.execute(f"SELECT key, answer FROM answers WHERE key IN ({marks})", batch):
            found[key] = Answer.from_row(msgspec.json.decode(raw))
    return found


class ResponseCache:
    """Reads on the caller's thread; writes through `CacheWriter`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = _connect(path)

    def get_many(self, keys: list[str]) -> dict[str, Answer]:
        return _lookup(self.db, keys)

    def present(self, keys: list[str]) -> set[str]:
        """Which of `keys` hold an answer, without reading the answers."""
        found: set[str] = set()
        for start in range(0, len(keys), _LOOKUP_BATCH):
            batch = keys[start:start + _LOOKUP_BATCH]
            marks = ",".join("?" * len(batch))
            found.update(k for (k,) in self.db.execute(f"SELECT key FROM answers WHERE key IN ({marks})", batch))
        return found

    def put_many(self, items: Iterable[tuple[str, Answer]]) -> None:
        rows = [(key, _encode(answer).decode()) for key, answer in items if answer.error is None]
        if rows:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)", rows)
            self.db.execute("COMMIT")

    def delete_many(self, keys: Iterable[str]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("DELETE FROM answers WHERE key = ?", [(key,) for key in keys])
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


class CacheWriter:
    """Commits answers in groups on a thread of its own. `add` is cheap (the event loop calls it per answer);
    `flush` hands the pending group over, first sharing the wall seconds since the last group among its answers
    (their `serving_s`, which is stored with them)."""

    def __init__(self, path: Path) -> None:
        self.cache = ResponseCache(path)
        self.pending: list[tuple[str, Answer]] = []
        # Bounded: when the disk is slower than the teacher, handing over waits (and so does sending), rather than
        # answers piling up in memory uncommitted, where a kill would lose them all.
        self.groups: queue.Queue[list[tuple[str, Answer]] | None] = queue.Queue(maxsize=GROUPS_BEHIND)
        self.since = time.monotonic()
        self.committed = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._commit_loop, name="answer-cache", daemon=True)
        self.thread.start()

    def start_clock(self) -> None:
        self.since = time.monotonic()

    def add(self, key: str, answer: Answer) -> None:
        self.pending.append((key, answer))
        if len(self.pending) >= GROUP_ANSWERS:
            self._hand_over()

    def flush(self) -> None:
        """Hand the pending group over; raises once the commit thread has failed, so the caller stops paying for
        answers that can no longer be kept."""
        if self.error is not None:
            raise self._failed() from self.error
        self._hand_over()

    def _hand_over(self) -> None:
        if not self.pending:
            return
        now = time.monotonic()
        share = (now - self.since) / len(self.pending)
        for _, answer in self.pending:
            answer.serving_s = share
        self.since = now
        self._put(self.pending)
        self.pending = []

    def _put(self, group: list[tuple[str, Answer]] | None) -> None:
        """Wait for room in the queue, but never for a commit thread that has stopped."""
        while True:
            try:
                self.groups.put(group, timeout=0.1)
                return
            except queue.Full:
                if not self.thread.is_alive():
                    raise self._failed() from self.error

    def _failed(self) -> CacheFailed:
        return CacheFailed(f"the answer cache {self.cache.path} stopped committing ({type(self.error).__name__}: "
                              f"{self.error}); {self.committed} answers were committed and are kept: free disk "
                              "space or fix the cause, and rerun to ask for the rest")

    def _commit_loop(self) -> None:
        while True:
            group = self.groups.get()
            done = group is None
            while not done and not self.groups.empty():  # catch up in one transaction when behind
                more = self.groups.get()
                done = more is None
                group += more or []
            try:
                if group:
                    self.cache.put_many(group)
                    self.committed += len(group)
            except BaseException as exc:  # noqa: BLE001 - reported by close(), on the caller's thread
                self.error = exc
                return
            if done:
                return

    def close(self) -> None:
        """Commit everything pending and stop; raises what the commit thread met, if anything."""
        try:
            if self.error is None:
                self._hand_over()
            if self.thread.is_alive():
                self._put(None)
                self.thread.join()
        finally:
            self.cache.close()
        if self.error is not None:
            raise self._failed() from self.error
