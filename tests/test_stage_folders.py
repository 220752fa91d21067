"""Each stage writes only its own folder of the run: what two stages share (the student's model cards, the
teacher's answers) has one owner. The stages run on a scripted teacher and student (fast); the real ones in
tests/test_pipeline.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from distill.artifacts import sha256_file, write_json
from distill.compare import stage as compare_stage
from distill.compare.contestants import Contestant, Server, Setup, student_requests
from distill.config import Config, load_config
from distill.filter.stage import filter_stage
from distill.layout import RunLayout
from distill.pipeline import get_stage
from distill.stages import StageRecorder, unfinished
from fake_openai import FakeEndpoint
from helpers import DEMO_INPUTS, study_config, write_config
from student.card import write_model_cards
from student.train import STAGE as TRAIN
from teacher.client import Target
from teacher.generate import generate


def _files(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under `root`: its content hash and its modification time."""
    return {str(p.relative_to(root)): (sha256_file(p), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _outside(files: dict[str, tuple[str, int]], stage: str) -> dict[str, tuple[str, int]]:
    return {name: seen for name, seen in files.items() if not name.startswith(f"{stage}/")}


def _trained(config: Config, layout: RunLayout) -> None:
    """What train leaves (an adapter with its card, a manifest hashing both), without minutes of training."""
    recorder = StageRecorder(TRAIN, config, layout)
    layout.train.adapter.mkdir(parents=True)
    (layout.train.adapter / "adapter_model.safetensors").write_bytes(b"weights")
    write_model_cards(config, layout, {"steps": 3, "train_rows": 20})
    write_json(layout.train.trained_ids, [])
    recorder.finish(outputs=[layout.train.adapter, layout.train.trained_ids], counts={"train_rows": 20, "steps": 3})


def _fake_student(url: str) -> Contestant:
    """The adapter as a contestant answering on a scripted endpoint instead of a vLLM server."""

    @contextmanager
    def served(setup: Setup, log: Path) -> Iterator[dict[str, Target]]:
        yield {"adapter": Target((url,), "fake-model")}

    return Contestant("adapter", "student", "scripted student",
                      lambda setup, texts: student_requests(setup.task, setup.config, texts),
                      server=lambda setup: Server("student", served))


def test_each_stage_changes_files_only_in_its_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = RunLayout(tmp_path / "run")
    with FakeEndpoint(answer="billing") as teacher, FakeEndpoint(answer="billing") as student:
        raw = study_config("fake-model", DEMO_INPUTS, compare={"max_concurrency": 4})
        raw["teacher"] = {"model": "fake-model", "url": teacher.url, "concurrency": 4, "max_tokens": 8}
        config = load_config(write_config(tmp_path / "c.yaml", raw))
        monkeypatch.setattr(compare_stage, "CONTESTANTS", (compare_stage.TEACHER, _fake_student(student.url)))
        stages = (("generate", generate), ("filter", filter_stage), ("train", _trained),
                  ("compare", compare_stage.compare), ("compare", compare_stage.compare))
        for name, run in stages:
            before = _files(layout.root)
            run(config, layout)
            assert _outside(_files(layout.root), name) == _outside(before, name), f"{name} wrote outside {name}/"
            assert unfinished(get_stage(name), layout) is None, f"{name} made what it declares it produces"
        asked = len(teacher.requests)
        compare_stage.compare(config, layout)
        assert len(teacher.requests) == asked, "the teacher's answers and timing are paid for once"

    assert layout.compare.teacher_answers.is_file() and "| train rows | 20 |" in (
        layout.train.adapter / "README.md").read_text()
    card = layout.compare.model_card("adapter").read_text()
    assert "| agreement with the teacher | 1 | 1.000 |" in card, "compare's card states its results"
    assert not layout.compare.model_card("merged").exists()
