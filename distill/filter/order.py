"""The train/eval split's seeded order, for any number of rows.

A row's place comes from its own id (a hash of its content), not its position: a row inserted at the top of the
inputs leaves every other row on its side of the split. Out of memory the order is an external sort: rows go to
buckets by their key's leading 64 bits (bucket b holds keys below those of bucket b+1), each bucket is sorted
alone, and the buckets are read back in turn. Buckets are Arrow IPC files in a scratch folder.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BUCKET_ROWS = 25_000  # kept rows per bucket on average: what is sorted in memory at once
MAX_BUCKETS = 200  # files open at once: under the 256 a process may open by default on macOS


def order_key(seed: int, row_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{row_id}".encode()).digest()


class SeededOrder:
    """Rows added in any number of batches, read back one at a time in the seeded order (ties: the order they
    were added, as a stable sort keeps them)."""

    def __init__(self, folder: Path, schema: Any, seed: int, expected_rows: int) -> None:
        import pyarrow as pa

        self.folder, self.seed, self.row_schema = folder, seed, schema
        self.schema = schema.append(pa.field("_key", pa.binary())).append(pa.field("_index", pa.int64()))
        self.buckets = max(1, min(MAX_BUCKETS, math.ceil(expected_rows / BUCKET_ROWS)))
        self.writers: dict[int, Any] = {}
        self.rows = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        import numpy as np
        import pyarrow as pa

        if not rows:
            return
        keys = [order_key(self.seed, row["id"]) for row in rows]
        buckets = np.array([int.from_bytes(key[:8], "big") * self.buckets >> 64 for key in keys])  # by key order
        table = pa.Table.from_pylist(rows, schema=self.row_schema)
        table = table.append_column("_key", pa.array(keys, pa.binary()))
        table = table.append_column("_index", pa.array(np.arange(self.rows, self.rows + len(rows))))
        self.rows += len(rows)
        grouped = np.argsort(buckets, kind="stable")
        table, buckets = table.take(grouped), buckets[grouped]
        starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
        for start, end in zip(starts, [*starts[1:], len(buckets)], strict=True):
            self._writer(int(buckets[start])).write_table(table.slice(start, end - start))

    def _writer(self, bucket: int) -> Any:
        import pyarrow as pa

        if bucket not in self.writers:
            self.writers[bucket] = pa.ipc.new_file(str(self.folder / f"bucket-{bucket:04d}.arrow"), self.schema)
        return self.writers[bucket]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import pyarrow as pa

        for writer in self.writers.values():
            writer.close()
        for bucket in range(self.buckets):
            path = self.folder / f"bucket-{bucket:04d}.arrow"
            if not path.exists():
                continue
            with pa.memory_map(str(path)) as source:
                members = pa.ipc.open_file(source).read_all().to_pylist()
            members.sort(key=lambda row: (row["_key"], row["_index"]))
            for row in members:
                del row["_key"], row["_index"]
                yield row
            path.unlink()  # read: its disk space goes back before the next bucket is sorted
