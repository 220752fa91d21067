"""Traffic becomes data: every request served is logged before its answer is sent, and what the next run can
use is written beside the log in the formats it reads.

- `serve/traffic.jsonl`: one JSON object a request (text, who answered, answer, confidence, latency, tokens; never
  a key or a header), rotated to `traffic-<UTC time>.jsonl` past `serve.log_rotate_mb`;
- `serve/inputs.jsonl`: each distinct text once, under `data.text_column`: new inputs for `data.inputs`;
- `serve/teacher_answers.jsonl`: every teacher answer paid for, as a gateway logs it, `{"request": ..., "response":
  ...}` a line: recorded teacher answers for the next run.

Each line is one `write()` to a file opened with O_APPEND, done before the client is answered: once the kernel has
it, a killed server (kill -9 included) cannot lose it or leave half of it; the files are fsynced every second
against a machine crash. A line that cannot be written fails its request (HTTP 500), never silently.
"""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import xxhash

from distill.config import DataConfig
from distill.layout import ServeFiles

_encode = msgspec.json.Encoder().encode


class LogWriteError(Exception):
    """A log line could not be written: the request it belongs to fails."""


class AppendFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, line: bytes) -> None:
        try:
            written = os.write(self.fd, line)
        except OSError as exc:
            raise LogWriteError(f"{self.path}: {exc}") from exc
        if written != len(line):  # a full disk writes part of a line: say so rather than log a torn row
            raise LogWriteError(f"{self.path}: wrote {written} of {len(line)} bytes (disk full?)")

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: a file that cannot be synced (a pipe, a device): nothing to do
                raise

    def close(self) -> None:
        os.close(self.fd)


def _seen_texts(path: Path, column: str) -> set[int]:
    """Hashes of the texts already in `inputs.jsonl`, so a restarted server does not add them again."""
    if not path.exists():
        return set()
    decode = msgspec.json.Decoder().decode
    with open(path, "rb") as handle:
        return {xxhash.xxh3_64_intdigest(decode(line)[column].encode()) for line in handle if line.strip()}


class TrafficLog:
    def __init__(self, files: ServeFiles, data: DataConfig, rotate_bytes: int) -> None:
        files.folder.mkdir(parents=True, exist_ok=True)
        self.files, self.data, self.rotate_bytes = files, data, rotate_bytes
        self.seen = _seen_texts(files.inputs, data.text_column)
        self.traffic = AppendFile(files.traffic)
        self.inputs = AppendFile(files.inputs)
        self.teacher = AppendFile(files.teacher_answers)

    def write(self, record: dict[str, Any], teacher_pair: dict[str, Any] | None) -> None:
        """The request's lines; raises `LogWriteError` where one could not be written."""
        if self.traffic.size() >= self.rotate_bytes:
            self._rotate()
        self.traffic.append(_encode(record) + b"\n")
        text = record["text"]
        digest = xxhash.xxh3_64_intdigest(text.encode())
        if digest not in self.seen:
            self.inputs.append(_encode(self._input_row(text, digest)) + b"\n")
            self.seen.add(digest)
        if teacher_pair is not None:
            self.teacher.append(_encode(teacher_pair) + b"\n")

    def _input_row(self, text: str, digest: int) -> dict[str, Any]:
        """A row the config's own `data` section reads: its text column, no gold yet, an id where it wants one."""
        row: dict[str, Any] = {self.data.text_column: text}
        if self.data.gold_column:
            row[self.data.gold_column] = None
        if self.data.id_column:
            row[self.data.id_column] = f"serve-{digest:016x}"
        return row

    def _rotate(self) -> None:
        self.traffic.sync()
        self.traffic.close()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        os.rename(self.files.traffic, self.files.folder / f"traffic-{stamp}.jsonl")
        self.traffic = AppendFile(self.files.traffic)

    def sync(self) -> None:
        for file in (self.traffic, self.inputs, self.teacher):
            file.sync()

    def close(self) -> None:
        for file in (self.traffic, self.inputs, self.teacher):
            file.sync()
            file.close()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")

