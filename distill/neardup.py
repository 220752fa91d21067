"""Near-duplicate detection with MinHash LSH (datasketch) over word unigrams and bigrams."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

NUM_PERM = 64
BATCH = 20_000  # MinHash.bulk's numpy work is done this many texts at a time, to bound memory

_WORD = re.compile(r"\w+")


def shingles(text: str) -> list[bytes]:
    words = _WORD.findall(text.casefold())
    grams = set(words) | {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)}
    return [g.encode() for g in grams] or [b""]


def signatures(texts: Iterable[str]) -> Iterator:
    from datasketch import MinHash
    from xxhash import xxh32_intdigest

    # xxh32 is deterministic like datasketch's default sha1, and several times faster per shingle.
    batch: list[list[bytes]] = []
    for text in texts:
        batch.append(shingles(text))
        if len(batch) == BATCH:
            yield from MinHash.bulk(batch, num_perm=NUM_PERM, seed=1, hashfunc=xxh32_intdigest)
            batch = []
    if batch:
        yield from MinHash.bulk(batch, num_perm=NUM_PERM, seed=1, hashfunc=xxh32_intdigest)


class NearIndex:
    """Texts seen so far, found again by estimated Jaccard similarity at or above a threshold."""

    def __init__(self, threshold: float) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self.hashes: dict[str, object] = {}

    def add(self, key: str, signature: object) -> None:
        self.lsh.insert(key, signature, check_duplication=False)
        self.hashes[key] = signature.hashvalues  # type: ignore[attr-defined]

    def matches(self, signature: object) -> list[str]:
        """Keys whose similarity reaches the threshold; LSH candidates are confirmed by their signatures."""
        values = signature.hashvalues  # type: ignore[attr-defined]
        return [key for key in self.lsh.query(signature)
                if (values == self.hashes[key]).mean() >= self.threshold]
