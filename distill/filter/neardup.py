"""Near-duplicate detection: MinHash signatures over word unigrams and bigrams, banded LSH, confirmed matches.

The signature maths and the band layout are datasketch's (its seeded affine permutations, and the bands and
rows MinHashLSH picks for a threshold); they are computed here over whole batches in numpy, because
datasketch's per-text objects cost more than the hashing itself at a million rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import cache

import numpy as np

NUM_PERM = 64
BATCH = 5_000  # texts hashed together: bounds the (shingles x permutations) matrix to a few tens of MB

_WORD = re.compile(r"\w+")


def shingles(text: str) -> set[str]:
    words = _WORD.findall(text.casefold())
    return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)} or {""}


@cache
def _permutations() -> tuple[np.ndarray, np.ndarray]:
    from datasketch import MinHash

    a, b = MinHash(num_perm=NUM_PERM, seed=1, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def signature_matrix(texts: list[str]) -> np.ndarray:
    """One row of NUM_PERM uint32 minimums per text."""
    from xxhash import xxh32_intdigest

    a, b = _permutations()
    sets = [shingles(text) for text in texts]
    hashes = np.fromiter((xxh32_intdigest(g.encode()) for s in sets for g in s), dtype=np.uint32)
    starts = np.cumsum([0] + [len(s) for s in sets[:-1]])
    permuted = hashes[:, None] * a + b  # uint32 arithmetic wraps: an affine permutation of the 32-bit space
    return np.minimum.reduceat(permuted, starts, axis=0)


def signatures(texts: Iterable[str]) -> Iterator[np.ndarray]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == BATCH:
            yield from signature_matrix(batch)
            batch = []
    if batch:
        yield from signature_matrix(batch)


class NearIndex:
    """Texts seen so far, found again by estimated Jaccard similarity at or above a threshold."""

    def __init__(self, threshold: float) -> None:
        from datasketch import MinHashLSH

        layout = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self.bands = [slice(i * layout.r, (i + 1) * layout.r) for i in range(layout.b)]
        self.threshold = threshold
        self.tables: list[dict[bytes, list[str]]] = [{} for _ in self.bands]
        self.signatures: dict[str, np.ndarray] = {}

    def _band_keys(self, signature: np.ndarray) -> list[bytes]:
        return [signature[band].tobytes() for band in self.bands]

    def add(self, key: str, signature: np.ndarray) -> None:
        for table, band_key in zip(self.tables, self._band_keys(signature), strict=True):
            table.setdefault(band_key, []).append(key)
        self.signatures[key] = signature

    def matches(self, signature: np.ndarray) -> list[str]:
        """Keys whose similarity reaches the threshold; LSH candidates are confirmed by their signatures."""
        candidates = {key for table, band_key in zip(self.tables, self._band_keys(signature), strict=True)
                      for key in table.get(band_key, ())}
        return [key for key in sorted(candidates)
                if (signature == self.signatures[key]).mean() >= self.threshold]
