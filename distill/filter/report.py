"""The filter report (`filter/report.json`; stage.py writes it as `report.md` too), counted while the rows
stream through the stage.

What it holds per row is bounded by the label set, except the rows with gold (a held-out sample, usually): their
answer, gold and score are kept for the audit, as `task.details` reads them all at once.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

from distill.config import Config
from distill.filter import support
from distill.tasks import Task
from distill.tasks.grounding import Finding


class Audit:
    """The teacher's quality against gold (per class for labels, per field for JSON), and a seeded sample of
    disagreements to read."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.labels: list[str] = []
        self.gold: list[str] = []
        self.scores: list[float] = []
        self.wrong: list[dict[str, Any]] = []

    def see(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if row.get("gold") is not None and row["label"] is not None:
                score = self.task.score(row["label"], row["gold"])
                self.labels.append(row["label"])
                self.gold.append(row["gold"])
                self.scores.append(score)
                if score < 1:
                    self.wrong.append({"id": row["id"], "text": row["text"], "gold": row["gold"],
                                       "teacher": row["label"]})

    def result(self, samples: int, seed: int) -> dict[str, Any] | None:
        if not self.scores:
            return None
        task = self.task
        per_class: dict[str, list[float]] = defaultdict(list)
        if task.single_label:
            for gold, score in zip(self.gold, self.scores, strict=True):
                per_class[gold].append(score)
        details = task.details(self.labels, self.gold)
        return {
            "rows_with_gold": len(self.scores),
            "quality_name": task.quality_name,
            "teacher_accuracy": sum(self.scores) / len(self.scores),
            "per_class": {label: {"accuracy": sum(s) / len(s), "rows": len(s)}
                          for label, s in sorted(per_class.items())},
            "per_field": details.get("per_field", {}),
            "disagreements": random.Random(seed).sample(self.wrong, min(samples, len(self.wrong))),
        }


class ReportTally:
    """Counts for the report: every row as it is screened (`see`), each drop and each kept row as it is written."""

    def __init__(self, task: Task, config: Config) -> None:
        self.task, self.config = task, config
        self.rows_in = 0
        self.labels_before: Counter[str] = Counter()
        self.placeholders: Counter[str] = Counter()
        self.audit = Audit(task)
        self.support = support.Tally(task, config.filter)
        self.drops: Counter[str] = Counter()
        self.kept = {"train": Counter(), "eval": Counter()}  # answers per label (or filled field) in each split

    def see(self, rows: list[dict[str, Any]], found: list[list[Finding]]) -> None:
        self.rows_in += len(rows)
        for row in rows:
            if row["label"] is not None:
                self.labels_before.update(self.task.categories(row["label"]))
            self.placeholders.update(self.task.placeholder_fields(row["raw"]))
        self.audit.see(rows)
        self.support.see(rows, found)

    def keep(self, split: str, row: dict[str, Any]) -> None:
        self.kept[split].update(self.task.categories(row["label"]))

    def report(self, train: int, evaluation: int, fidelity_part: Any) -> dict[str, Any]:
        after = Counter(self.kept["train"])  # counted as the rows lie: train first, then eval
        after.update(self.kept["eval"])
        return {
            "rows_in": self.rows_in, "rows_kept": train + evaluation, "train": train, "eval": evaluation,
            "drops": dict(self.drops.most_common()),
            "labels_before": dict(self.labels_before.most_common()),
            "labels_after": dict(after.most_common()),
            "audit": self.audit.result(self.config.filter.audit_samples, self.config.filter.seed),
            # Placeholder strings ("null", "N/A") the teacher wrote where a value belongs; never kept as values.
            "placeholders": dict(self.placeholders.most_common()),
            "grounding": self.support.result(),
            "constraint_fidelity": fidelity_part,
        }
