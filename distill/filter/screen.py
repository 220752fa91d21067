"""Why a row is dropped: the filter's checks, run batch after batch over the teacher's rows.

Checks run in a fixed order and the first that fails names the row's reason: the per-row rules (`row_reason`),
grounding (support.py), then the checks that look back at earlier rows: test leaks and exact duplicates
(dedup.py), near duplicates (neardup.py). The label cap looks at all rows at once: `LabelCaps` keeps each label's
most confident rows while the rows stream by and names the others afterwards.

State kept across batches: 8 bytes per distinct text for exact dedup, the near-dup index in a SQLite file in the
stage's scratch folder (its page cache capped, so bounded at any row count: see neardup.py), and `max_per_label`
entries per label for the cap.
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import Config, FilterConfig
from distill.data.inputs import normalise
from distill.filter import support
from distill.filter.dedup import HashSet, first_seen, text_keys
from distill.filter.neardup import NearIndex, signature_matrix
from distill.tasks import make_task
from distill.tasks.grounding import Finding


def confidence(row: dict[str, Any], per_label: bool) -> float | None:
    """The teacher's confidence as `filter.min_logprob` reads it: a single label's log-probability (that label's
    probability, however many tokens it takes), else the mean log-probability per answer token, so a long JSON
    object or summary is not dropped for its length."""
    if row["logprob"] is None or per_label:
        return row["logprob"]
    samples = max(len(json.loads(row.get("samples") or "[]")), 1)  # completion tokens count every sample's
    return row["logprob"] / max((row.get("completion_tokens") or 0) / samples, 1.0)


def row_reason(row: dict[str, Any], rules: FilterConfig, per_label: bool = True) -> str | None:
    """The first per-row check a row fails, or None."""
    if row.get("finish_reason") == "length":
        return "truncated"  # cut off at teacher.max_tokens: even an answer that parses may be incomplete
    if row["label"] is None:
        return "invalid"  # the teacher's output failed, or is not a valid label: nothing to learn from
    length = len(row["text"])
    if rules.min_text_chars is not None and length < rules.min_text_chars:
        return "too_short"
    if rules.max_text_chars is not None and length > rules.max_text_chars:
        return "too_long"
    if rules.max_output_chars is not None and len(row["raw"] or "") > rules.max_output_chars:
        return "output_too_long"
    sure = confidence(row, per_label) if rules.min_logprob is not None else None
    if rules.min_logprob is not None and (sure is None or sure < rules.min_logprob):
        return "low_confidence"
    share = row.get("vote_share")
    if rules.min_vote_share is not None and share is not None and share < rules.min_vote_share:
        return "low_vote_share"
    return None


class LabelCaps:
    """Keeps the `cap` most confident rows of each label (ties: earlier rows first) in a heap per label."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.heaps: dict[str, list[tuple[float, int]]] = {}

    def offer(self, rows: list[dict[str, Any]], reasons: list[str | None], offset: int) -> None:
        for i, (row, reason) in enumerate(zip(rows, reasons, strict=True)):
            if reason is None:
                # The heap's root is the worst kept row: lowest log-probability, then the latest.
                rank = (row["logprob"] if row["logprob"] is not None else float("-inf"), -(offset + i))
                heap = self.heaps.setdefault(row["label"], [])
                if len(heap) < self.cap:
                    heapq.heappush(heap, rank)
                elif rank > heap[0]:
                    heapq.heapreplace(heap, rank)

    def kept(self) -> set[int]:
        return {-index for heap in self.heaps.values() for _, index in heap}

    @staticmethod
    def apply(reasons: list[str | None], offset: int, kept: set[int]) -> None:
        for i, reason in enumerate(reasons):
            if reason is None and offset + i not in kept:
                reasons[i] = "over_label_cap"


class Screen:
    """Every check but the label cap, one batch at a time, remembering what later batches are checked against."""

    def __init__(self, config: Config, test_texts: list[str], scratch: Path) -> None:
        """`scratch`: the folder of the near-dup index's files."""
        self.rules, self.task = config.filter, make_task(config.task)
        self.test_keys = {normalise(text) for text in test_texts}
        self.seen = HashSet()
        self.near = None
        if self.rules.near_dup_threshold is not None:
            self.near = NearIndex(self.rules.near_dup_threshold, scratch, signature_matrix(test_texts))
        self.caps = LabelCaps(self.rules.max_per_label) if self.rules.max_per_label is not None else None
        self.offset = 0  # rows screened before this batch: a row's key in the near-dup index and the cap

    def __call__(self, rows: list[dict[str, Any]],
                 found: list[list[Finding]] | None = None) -> tuple[list[str | None], list[list[Finding]]]:
        """Each row's reason (None: kept so far) and its unsupported parts."""
        reasons = [row_reason(row, self.rules, self.task.single_label) for row in rows]
        found = support.findings(rows, self.task, self.rules) if found is None else found
        support.support_reasons(reasons, found, self.task, self.rules)
        self._exact(rows, reasons)
        if self.near is not None:
            self._near(rows, reasons)
        if self.caps is not None:
            self.caps.offer(rows, reasons, self.offset)
        self.offset += len(rows)
        return reasons, found

    def _exact(self, rows: list[dict[str, Any]], reasons: list[str | None]) -> None:
        """Copies of a test query leak it; later copies of a text add nothing. A leak still counts as seen."""
        candidates = [i for i, reason in enumerate(reasons) if reason is None]
        new = first_seen(text_keys([rows[i]["text"] for i in candidates]), self.seen)
        for i, first in zip(candidates, new, strict=True):
            if normalise(rows[i]["text"]) in self.test_keys:
                reasons[i] = "leaks_test"
            elif self.rules.dedup_exact and not first:
                reasons[i] = "duplicate"

    def _near(self, rows: list[dict[str, Any]], reasons: list[str | None]) -> None:
        """Near copies of a test query leak it; near copies of an earlier kept row add nothing.

        Test queries and kept rows share one index, so a batch costs a single LSH query.
        """
        candidates = [i for i, reason in enumerate(reasons) if reason is None]
        matrix = signature_matrix([rows[i]["text"] for i in candidates])
        numbers = self.offset + np.array(candidates, dtype=np.int64)  # a row's number: its place in the input
        for i, verdict in zip(candidates, self.near.screen(matrix, numbers), strict=True):
            reasons[i] = verdict

    def close(self) -> None:
        if self.near is not None:
            self.near.close()
