"""Atomic writes, row files and content hashes: what every stage uses to write its outputs safely."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distill.errors import UserError


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
    """Strict JSON, which every reader accepts: a NaN or infinity is refused (a source where one can arise
    legitimately, a diverged loss or an unbounded threshold, writes `finite(value)`: null)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, default=str, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc} at {_non_finite(obj) or 'an unknown key'}; write finite(value) "
                         "there") from exc
    write_text(path, text + "\n")


def write_json_list(path: Path, items: Iterable[Any]) -> None:
    """A JSON list written item by item (a list of any length in bounded memory), as `write_json` writes it."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        opening = separator = "[\n  "
        for item in items:
            out.write(separator + json.dumps(item, default=str, allow_nan=False))
            separator = ",\n  "
        out.write("[]\n" if separator == opening else "\n]\n")


def count_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def finite(value: float | None) -> float | None:
    """The number, or None (JSON null) where it is NaN or infinite."""
    return None if value is None or not math.isfinite(value) else value


def _non_finite(obj: Any, where: str = "") -> str | None:
    """The JSON path of the first NaN or infinity in `obj`, for the error message."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else where or "(top level)"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    return next((found for key, value in items if (found := _non_finite(value, f"{where}.{key}".lstrip(".")))),
                None)


def write_rows(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> None:
    """Write rows as a Parquet file that `datasets.load_dataset("parquet", ...)` reads back; with `columns`,
    the file has exactly those columns, in that order, even when there are no rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if columns is not None:
        table = pa.table({c: [row[c] for row in rows] for c in columns}) if rows else pa.table(
            {c: pa.array([], pa.string()) for c in columns})
    else:
        table = pa.Table.from_pylist(rows)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_rows(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The rows of a Parquet file; a missing `required` column is a `UserError` naming it and the file."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    require_columns(path, table.column_names, required)
    return table.to_pylist()


def require_columns(path: Path, names: list[str], required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in names]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing} (has {names}); the stage that "
                        "writes it is from another version of distill: rerun it with --force")


BATCH_ROWS = 20_000  # rows held at once by a streaming stage: about 40 MB of Python rows


def column_sums(path: Path, columns: tuple[str, ...]) -> dict[str, float]:
    """Sums of those of `columns` the file has (nulls as 0), a row group at a time."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    present = [c for c in columns if c in source.schema_arrow.names]
    sums = dict.fromkeys(present, 0.0)
    for group in range(source.num_row_groups):
        table = source.read_row_group(group, columns=present)
        for column in present:
            sums[column] += pc.sum(table[column]).as_py() or 0
    return sums


def read_batches(path: Path, required: tuple[str, ...] = (), batch_rows: int | None = None,
                 columns: list[str] | None = None) -> Iterator[list[dict[str, Any]]]:
    """The rows of a Parquet file, `batch_rows` at a time, so a file of any size reads in bounded memory."""
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    require_columns(path, source.schema_arrow.names, required)
    # A row group at a time: ParquetFile.iter_batches (pyarrow 26) holds on to about 80 bytes of every row it
    # decoded until the file is closed, so memory grew with the file.
    for group in range(source.num_row_groups):
        for batch in source.read_row_group(group, columns=columns).to_batches(max_chunksize=batch_rows or BATCH_ROWS):
            yield batch.to_pylist()


class RowWriter:
    """Appends rows to a Parquet file of a fixed schema, a row group per `batch_rows`; see `row_writer`."""

    def __init__(self, writer: Any, schema: Any, batch_rows: int) -> None:
        self.writer, self.schema, self.batch_rows = writer, schema, batch_rows
        self.buffer: list[dict[str, Any]] = []
        self.rows = 0

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        self.buffer.extend(rows)
        if len(self.buffer) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.rows += len(self.buffer)
            self.buffer = []


@contextmanager
def row_writer(path: Path, schema: Any, batch_rows: int | None = None) -> Iterator[RowWriter]:
    """Write a Parquet file batch by batch, atomically: it replaces `path` whole when the block ends, and a
    failure leaves `path` as it was."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            rows = RowWriter(writer, schema, batch_rows or BATCH_ROWS)
            yield rows
            rows.flush()


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
