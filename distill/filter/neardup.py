"""Near-duplicate detection: MinHash signatures over word unigrams and bigrams, banded LSH, confirmed matches.

The signature maths and the band layout are datasketch's (its seeded affine permutations, and the bands and
rows MinHashLSH picks for a threshold); they are computed here over whole batches in numpy, because
datasketch's per-text objects cost more than the hashing itself at a million rows.

The index lives in SQLite files in the filter's scratch folder (on disk, where /tmp may be memory), so its memory
does not grow with the rows: SQLite's page caches are capped (`CACHE_MB`) and Python holds only the batch in
hand. A band's 11 values are kept as one 64-bit hash, and a batch of rows costs one probe of its band keys, one
fetch of its candidates' signatures and one insert of the rows it keeps, whatever the index holds. The files take
about 0.36 GB of disk per million kept rows (band keys 90 MB, signatures 270 MB).
"""

from __future__ import annotations

import json
import re
import sqlite3
from functools import cache
from pathlib import Path

import numpy as np

NUM_PERM = 64
BATCH = 5_000  # texts hashed together: bounds the (shingles x permutations) matrix to a few tens of MB
# Band keys and signatures in files of their own, each with its own capped page cache (the index's memory at any
# row count): every batch probes and inserts band keys all over their B-tree, which the cache keeps; signatures
# are appended in row order and read back for the few candidates, so they need little.
FILES = {"main": "near-dup-bands.sqlite", "signatures": "near-dup-signatures.sqlite"}
CACHE_MB = {"main": 256, "signatures": 8}

_WORD = re.compile(r"\w+")


def shingles(text: str) -> set[str]:
    words = _WORD.findall(text.casefold())
    return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)} or {""}


@cache
def _permutations() -> tuple[np.ndarray, np.ndarray]:
    from datasketch import MinHash

    a, b = MinHash(num_perm=NUM_PERM, seed=1, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def _matrix(texts: list[str]) -> np.ndarray:
    from xxhash import xxh32_intdigest

    a, b = _permutations()
    sets = [shingles(text) for text in texts]
    hashes = np.fromiter((xxh32_intdigest(g.encode()) for s in sets for g in s), dtype=np.uint32)
    starts = np.cumsum([0] + [len(s) for s in sets[:-1]])
    # uint32 arithmetic wraps: an affine permutation of the 32-bit space. Permutations by shingles, not the
    # transpose: numpy runs along the contiguous axis about ten times faster here.
    permuted = a[:, None] * hashes[None, :]
    permuted += b[:, None]
    return np.ascontiguousarray(np.minimum.reduceat(permuted, starts, axis=1).T)


def signature_matrix(texts: list[str]) -> np.ndarray:
    """One row of NUM_PERM uint32 minimums per text, hashed BATCH texts at a time."""
    parts = [_matrix(texts[start:start + BATCH]) for start in range(0, len(texts), BATCH)]
    return np.concatenate(parts) if parts else np.empty((0, NUM_PERM), dtype=np.uint32)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit (uint64 arithmetic wraps)."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def band_keys(matrix: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) int64 keys: each band's `rows` values hashed together with the band's number, so one table
    holds every band. Two different bands share a key with probability 2^-64; such a pair only adds a candidate,
    which the signatures then judge like any other."""
    values = matrix[:, :bands * rows].reshape(len(matrix), bands, rows).astype(np.uint64)
    h = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64), values.shape[:2]).copy()
    for j in range(rows):
        h = _mix(h ^ values[:, :, j])
    return h.view(np.int64)  # SQLite integers are signed 64-bit


class NearIndex:
    """Rows kept so far and the held-out test queries, found again by estimated Jaccard similarity at or above
    a threshold, in two SQLite files in `folder`. Test queries are stored under negative numbers, kept rows under
    their row number."""

    def __init__(self, threshold: float, folder: Path, test_signatures: np.ndarray) -> None:
        from datasketch import MinHashLSH

        layout = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self.bands, self.rows, self.threshold = layout.b, layout.r, threshold
        where = {schema: str(folder / name) for schema, name in FILES.items()}
        self.db = sqlite3.connect(where["main"], isolation_level=None)
        self.db.execute("ATTACH DATABASE ? AS signatures", (where["signatures"],))
        # One writer of scratch files removed when the stage ends: no journal, no fsync, no locking round trips.
        for schema, megabytes in CACHE_MB.items():
            for pragma in ("journal_mode = OFF", "synchronous = OFF", "locking_mode = EXCLUSIVE",
                           f"cache_size = {-megabytes * 1024}"):
                self.db.execute(f"PRAGMA {schema}.{pragma}")
        self.db.execute("CREATE TABLE bands (key INTEGER, row INTEGER, PRIMARY KEY (key, row)) WITHOUT ROWID")
        self.db.execute("CREATE TABLE signatures.rows (row INTEGER PRIMARY KEY, signature BLOB)")
        self._add(-1 - np.arange(len(test_signatures)), test_signatures,
                  band_keys(test_signatures, self.bands, self.rows))

    def close(self) -> None:
        self.db.close()

    def screen(self, matrix: np.ndarray, numbers: np.ndarray) -> list[str | None]:
        """Each row's verdict, in order, as if the rows came one at a time: leaks_test where it matches a test
        query, near_duplicate where it matches an earlier kept row (this batch's included), else None: kept,
        and added to the index under its number."""
        verdicts: list[str | None] = [None] * len(matrix)
        if not len(matrix):
            return verdicts
        keys = band_keys(matrix, self.bands, self.rows)
        earlier = self._probe(keys)
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        shared = counts[inverse.reshape(keys.shape)] > 1  # a band key another row of this batch has too
        hit = np.isin(keys, np.fromiter(earlier, dtype=np.int64, count=len(earlier)))
        with_candidates = np.flatnonzero((shared | hit).any(axis=1)).tolist()  # the rest are kept as they are
        stored = self._signatures({r for k in keys[with_candidates].ravel().tolist() for r in earlier.get(k, ())})
        mates: dict[int, list[int]] = {}  # band key -> this batch's kept rows with it
        for i in with_candidates:
            row_keys = keys[i].tolist()
            older = {r: stored[r] for k in row_keys for r in earlier.get(k, ())}
            peers = [matrix[j] for j in {j for k in row_keys for j in mates.get(k, ())}]
            verdicts[i] = self._verdict(matrix[i], older, peers)
            if verdicts[i] is None:
                for k in row_keys:
                    mates.setdefault(k, []).append(i)
        kept = np.array([v is None for v in verdicts])
        self._add(numbers[kept], matrix[kept], keys[kept])
        return verdicts

    def _verdict(self, signature: np.ndarray, older: dict[int, np.ndarray], peers: list[np.ndarray]) -> str | None:
        """A row's verdict from its candidates: stored rows and queries by number, and this batch's kept rows."""
        matched = [r for r, other in older.items() if self._similar(signature, other)]
        if any(r < 0 for r in matched):
            return "leaks_test"
        if matched or any(self._similar(signature, peer) for peer in peers):
            return "near_duplicate"
        return None

    def _similar(self, a: np.ndarray, b: np.ndarray) -> bool:
        """The estimated Jaccard similarity reaches the threshold: the share of permutations that agree."""
        return bool((a == b).mean() >= self.threshold)

    def _probe(self, keys: np.ndarray) -> dict[int, list[int]]:
        """The stored rows under any of these band keys, by key, in one query."""
        found: dict[int, list[int]] = {}
        query = "SELECT key, row FROM bands WHERE key IN (SELECT value FROM json_each(?))"
        for key, row in self.db.execute(query, (json.dumps(np.unique(keys).tolist()),)):
            found.setdefault(key, []).append(row)
        return found

    def _signatures(self, rows: set[int]) -> dict[int, np.ndarray]:
        query = "SELECT row, signature FROM signatures.rows WHERE row IN (SELECT value FROM json_each(?))"
        return {row: np.frombuffer(blob, dtype=np.uint32)
                for row, blob in self.db.execute(query, (json.dumps(sorted(rows)),))}

    def _add(self, numbers: np.ndarray, matrix: np.ndarray, keys: np.ndarray) -> None:
        """One transaction per batch; band entries in key order, so neighbours in the B-tree are written together."""
        flat, rows = keys.ravel(), np.repeat(numbers.astype(np.int64), keys.shape[1])
        order = np.argsort(flat, kind="stable")
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR IGNORE INTO bands VALUES (?, ?)",
                            zip(flat[order].tolist(), rows[order].tolist(), strict=True))
        self.db.executemany("INSERT INTO signatures.rows VALUES (?, ?)",
                            zip(numbers.tolist(), (row.tobytes() for row in matrix), strict=True))
        self.db.execute("COMMIT")
