"""Parquet written a row group at a time, so a stage streaming millions of rows never holds them all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distill.artifacts import atomic_path


@contextmanager
def row_group_writer(path: Path, schema: Any) -> Iterator[Callable[[dict[str, list]], None]]:
    """Yield `write(columns)`, which appends one row group; the file replaces `path` only when the block ends
    without an error (written beside it, fsynced, renamed), so a reader never sees half a file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        yield lambda columns: writer.write_table(pa.table(columns, schema=schema))
