"""compare's contestants: one entry each, measured by one loop; those naming one server share one start of it
(fast: scripted endpoints stand in for vLLM; tests/test_pipeline.py measures real ones)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from distill.artifacts import write_json
from distill.compare import stage as compare_stage
from distill.compare.contestants import (
    ADAPTER,
    ADAPTER_SERVER,
    BASE_SERVER,
    BASELINE,
    DORA_SKIPPED,
    MERGED,
    Contestant,
    Server,
    Setup,
    measure_all,
    student_requests,
)
from distill.config import load_config
from distill.layout import RunLayout
from distill.stages import StageRecorder
from distill.tasks import make_task
from fake_openai import FakeEndpoint
from helpers import DEMO_INPUTS, study_config, write_config
from teacher.client import Target

TEXTS = [f"I was charged twice for order {i}" for i in range(6)]


def _setup(tmp_path: Path) -> Setup:
    config = load_config(write_config(tmp_path / "c.yaml", study_config("m", DEMO_INPUTS,
                                                                          compare={"max_concurrency": 4})))
    layout = RunLayout(tmp_path / "run")
    return Setup(config, layout, StageRecorder(compare_stage.STAGE, config, layout), make_task(config.task), TEXTS,
                 [], [str(i) for i in range(len(TEXTS))])


def _on(url: str, opened: list[str], *names: str) -> Server:
    @contextmanager
    def serve(setup: Setup, log: Path) -> Iterator[dict[str, Target]]:
        opened.append(log.name)
        yield {name: Target((url,), "fake-model") for name in names}

    return Server("shared" if len(names) > 1 else names[0], serve)


def test_one_loop_measures_each_entry_and_starts_a_shared_server_once(tmp_path: Path) -> None:
    opened: list[str] = []
    with FakeEndpoint(answer="billing") as fake:
        shared = _on(fake.url, opened, "first", "second")

        def entry(name: str, server) -> Contestant:
            return Contestant(name, name, f"{name} served", lambda s, texts: student_requests(s.task, s.config, texts),
                              server=lambda setup: server)

        setup = _setup(tmp_path)
        measured = measure_all(setup, (entry("first", shared), entry("absent", None), entry("skipped", "cannot load"),
                                       entry("second", shared), entry("third", _on(fake.url, opened, "third"))))
    assert list(measured) == ["first", "skipped", "second", "third"], "in order; one not measured is left out"
    assert opened == ["shared_server.log", "third_server.log"], "contestants on one server share one start"
    assert measured["skipped"].status == "skipped" and measured["skipped"].reason == "cannot load"
    assert all(measured[n].status == "measured" and measured[n].predictions == ["billing"] * len(TEXTS)
               for n in ("first", "second", "third"))
    assert measured["second"].served_as == "second served" and measured["third"].points
    assert {"shared", "third"} <= setup.recorder.timings.keys()


def test_the_shipped_entries_choose_their_servers_as_compare_always_has(tmp_path: Path) -> None:
    assert [c.name for c in compare_stage.CONTESTANTS] == ["teacher", "adapter", "baseline", "merged"]
    setup = _setup(tmp_path)
    write_json(setup.layout.manifest("train"), {"outputs": {"adapter/adapter_model.safetensors": "a" * 64}})
    assert ADAPTER.server(setup) is BASELINE.server(setup) is ADAPTER_SERVER, "one vLLM, multi-LoRA"
    assert MERGED.server(setup) is None, "no merged copy from this training"
    dora = replace(setup, config=setup.config.model_copy(update={"student": setup.config.student.model_copy(
        update={"lora": setup.config.student.lora.model_copy(update={"use_dora": True})})}))
    assert ADAPTER.server(dora) == DORA_SKIPPED and BASELINE.server(dora) is BASE_SERVER
    off = replace(setup, config=setup.config.model_copy(update={"compare": setup.config.compare.model_copy(
        update={"prompt_baseline": False})}))
    assert BASELINE.server(off) is None
