"""What the next generate asks for again, beyond the rows with no cached answer.

Failed requests are never cached, so a rerun sends them again by itself; it also knows which rows failed
(from the outputs it is about to replace), so none of them is the probe. Invalid answers are cached like valid
ones, since a teacher may truly answer a row badly; but where they came from a broken server (the health check
stopped the stage, or more than `teacher.max_invalid_rate` of a finished run's answers were invalid), a marker
file (`generate/retry-invalid.json`, also written by `distill generate --retry-invalid`) makes the next runs ask
for every cached invalid answer again, until one finishes healthy. A run killed while retrying keeps the marker,
and its answers already replaced are not asked for again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from distill.artifacts import write_json
from distill.tasks import Task
from teacher.cache import request_key
from teacher.client import Answer


def invalid_answer(task: Task, rationale: bool) -> Callable[[Answer], bool]:
    """Whether an answer says nothing the task can use: no sample, or every sample empty or unparsable. An answer
    cut off at max_tokens is not counted: that is a setting to raise, not a broken server."""

    def invalid(answer: Answer) -> bool:
        return not answer.samples or all(
            s.finish_reason != "length" and task.parse(s.text, rationale).value is None for s in answer.samples)

    return invalid


def failed_keys(outputs: Path, prefix: bytes) -> frozenset[str]:
    """Cache keys of the rows whose request failed in the last run (rows merely not sent are not counted)."""
    if not outputs.exists():
        return frozenset()
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(outputs, columns=["text", "error"])
    except (OSError, ValueError, KeyError):  # a file cut short by a kill: nothing is known of earlier failures
        return frozenset()
    error = table["error"]
    failed = pc.and_(pc.is_valid(error), pc.invert(pc.starts_with(pc.fill_null(error, ""), "not sent")))
    return frozenset(request_key(prefix, text) for text in table.filter(failed)["text"].to_pylist())


def mark_retry(marker: Path, reason: str) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"reason": reason, "at": datetime.now(UTC).isoformat()})
