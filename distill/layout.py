"""Every path of a run folder, in one place: stages name the files they read and write through `RunLayout`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class GenerateFiles:
    folder: Path

    @property
    def outputs(self) -> Path:  # the teacher's answer to every row to label
        return self.folder / "outputs.parquet"

    @property
    def test(self) -> Path:  # the held-out test queries, written once by the stage that splits
        return self.folder / "test.parquet"

    @property
    def cache(self) -> Path:
        return self.folder / "cache.sqlite"

    @property
    def server_log(self) -> Path:
        return self.folder / "server.log"

    @property
    def retry_invalid(self) -> Path:  # present: the next run asks again for every cached invalid answer
        return self.folder / "retry-invalid.json"

    @property
    def fidelity(self) -> Path:  # teacher.fidelity_check: constrained vs unconstrained answers on a sample
        return self.folder / "fidelity.json"


@dataclass(frozen=True)
class FilterFiles:
    folder: Path

    @property
    def train(self) -> Path:
        return self.folder / "train.parquet"

    @property
    def eval(self) -> Path:
        return self.folder / "eval.parquet"

    @property
    def dropped(self) -> Path:
        return self.folder / "dropped.parquet"

    @property
    def report_json(self) -> Path:
        return self.folder / "report.json"

    @property
    def report_md(self) -> Path:
        return self.folder / "report.md"


@dataclass(frozen=True)
class TrainFiles:
    folder: Path

    @property
    def adapter(self) -> Path:
        return self.folder / "adapter"

    @property
    def merged(self) -> Path:
        return self.folder / "merged"

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def curves_json(self) -> Path:
        return self.folder / "curves.json"

    @property
    def curves_png(self) -> Path:
        return self.folder / "curves.png"

    @property
    def trained_ids(self) -> Path:
        return self.folder / "trained_ids.json"


@dataclass(frozen=True)
class CompareFiles:
    folder: Path

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.json"

    @property
    def answers(self) -> Path:
        return self.folder / "answers.parquet"

    @property
    def report_md(self) -> Path:
        return self.folder / "report.md"

    @property
    def report_html(self) -> Path:
        return self.folder / "report.html"

    @property
    def teacher_answers(self) -> Path:  # the teacher's answers to the test queries and its timing, paid once
        return self.folder / "teacher_answers.sqlite"

    def model_card(self, student: str) -> Path:  # train's card of the student ("adapter", "merged") with results
        return self.folder / f"{student}_card.md"

    def server_log(self, model: str) -> Path:
        return self.folder / f"{model}_server.log"


@dataclass(frozen=True)
class ServeFiles:
    folder: Path

    @property
    def traffic(self) -> Path:  # every request served, one JSON object a line; rotated to traffic-<time>.jsonl
        return self.folder / "traffic.jsonl"

    @property
    def inputs(self) -> Path:  # each distinct text served, as rows `data.inputs` reads
        return self.folder / "inputs.jsonl"

    @property
    def teacher_answers(self) -> Path:  # every teacher answer paid for: {"request": ..., "response": ...} a line
        return self.folder / "teacher_answers.jsonl"

    def server_log(self, model: str) -> Path:
        return self.folder / f"{model}_server.log"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def manifest(self, stage: str) -> Path:
        return self.stage_dir(stage) / MANIFEST

    def stage_log(self, stage: str) -> Path:  # library messages and warnings while the stage ran (appended)
        return self.stage_dir(stage) / "stage.log"

    @property
    def generate(self) -> GenerateFiles:
        return GenerateFiles(self.root / "generate")

    @property
    def filter(self) -> FilterFiles:
        return FilterFiles(self.root / "filter")

    @property
    def train(self) -> TrainFiles:
        return TrainFiles(self.root / "train")

    @property
    def compare(self) -> CompareFiles:
        return CompareFiles(self.root / "compare")

    @property
    def serve(self) -> ServeFiles:
        return ServeFiles(self.root / "serve")

    @property
    def lock(self) -> Path:
        return self.root / "run.lock"

    @property
    def lock_holder(self) -> Path:
        return self.root / "run.lock.holder.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def variant(self, name: str) -> RunLayout:
        return RunLayout(self.root / "variants" / name)
