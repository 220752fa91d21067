"""Exact-duplicate state that stays small at any row count: each normalised text is kept as its 8-byte hash.

At 10 million distinct texts the keys take 80 MB (a Python set of the texts themselves took about 1 GB). Two
different texts share a 64-bit hash with probability about n^2 / 2^65 (3e-6 at 10 million rows): such a pair
would drop the later row as a duplicate.
"""

from __future__ import annotations

import numpy as np

from distill.data.inputs import normalise


def text_keys(texts: list[str]) -> np.ndarray:
    from xxhash import xxh3_64_intdigest

    return np.fromiter((xxh3_64_intdigest(normalise(text).encode()) for text in texts), dtype=np.uint64,
                       count=len(texts))


class HashSet:
    """uint64 keys in disjoint sorted runs, each at least twice the size of the next (a binary counter): adding n
    keys costs O(n log n) in all, a lookup one binary search per run, and memory 8 bytes a key (twice that while
    the largest run is merged)."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def add(self, keys: np.ndarray) -> None:
        """Add keys that are not in the set yet."""
        run = np.unique(keys)
        while self.runs and len(self.runs[-1]) <= 2 * len(run):
            run = _merge(self.runs.pop(), run)
        self.runs.append(run)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(keys), dtype=bool)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            found |= run[at] == keys
        return found


def _merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two sorted runs with no key in common as one, in place of a re-sort (np.union1d copies both three times)."""
    merged = np.empty(len(a) + len(b), dtype=a.dtype)
    into = np.searchsorted(a, b) + np.arange(len(b))  # each b key lands after the a keys below it
    merged[into] = b
    rest = np.ones(len(merged), dtype=bool)
    rest[into] = False
    merged[rest] = a
    return merged


def first_seen(keys: np.ndarray, seen: HashSet) -> np.ndarray:
    """Which keys occur neither in `seen` nor earlier in `keys`; then adds those to `seen`, so batch after batch
    this is the same as checking one row at a time."""
    _, first = np.unique(keys, return_index=True)
    new = np.zeros(len(keys), dtype=bool)
    new[first] = True
    new &= ~seen.contains(keys)
    if new.any():
        seen.add(keys[new])
    return new
