"""The models compare measures, one entry each, and the one loop that measures them.

A contestant says how it is served (the server it answers on, or why it is skipped), what it is asked (its
request for each query, by chat or completion) and what an hour of it costs; the teacher, whose answers may come
from earlier runs, measures itself (distill/compare/stage.py). Contestants naming the same server are measured on
one vLLM: the adapter and the prompt-only base model share one through vLLM multi-LoRA, so one start serves both.
Adding a contestant is adding one entry to `CONTESTANTS` (stage.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.compare.measure import Measured, from_sweep, measure_target, skipped
from distill.config import Config, TeacherConfig
from distill.layout import RunLayout
from distill.stages import StageRecorder, read_manifest
from distill.tasks import Task
from student.serve import BASE_NAME, serve_adapter, serve_merged, student_requests
from teacher.client import Target
from teacher.protocol import teacher_request
from teacher.server import VLLMServer

DORA_SKIPPED = "DoRA adapter: vLLM cannot load it, so the student is measured merged only"
BASELINE_SERVED = "base model with the teacher's prompt"


@dataclass(frozen=True)
class Setup:
    """What every contestant is measured on: the held-out queries (`texts`, their `ids`) and the label-pool texts
    that keep a sweep's requests distinct (answered, not scored)."""

    config: Config
    layout: RunLayout
    recorder: StageRecorder
    task: Task
    texts: list[str]
    pool: list[str]
    ids: list[str]

    def parse(self, text: str | None) -> str | None:
        return self.task.parse(text).value


@dataclass(frozen=True)
class Server:
    """A server compare starts; its name names its log and its timing. `open` yields a target per contestant."""

    name: str
    open: Callable[[Setup, Path], AbstractContextManager[dict[str, Target]]]


@dataclass(frozen=True)
class Contestant:
    name: str  # its entry in metrics.json
    label: str  # its sweep's progress line
    served_as: str
    requests: Callable[[Setup, list[str]], list[dict[str, Any]]]  # its request for each text
    # The server it answers on; a string says why it is skipped; None: not measured in this run.
    server: Callable[[Setup], Server | str | None] = lambda setup: None
    method: str = "complete"  # "complete": the student's trained prompt; "chat": a chat model's
    price_per_hour: Callable[[Config], float] = lambda config: config.cost.student_price_per_hour
    measure: Callable[[Setup], Measured] | None = None  # measures itself (the teacher: answers paid for before)


def reference_teacher(teacher: TeacherConfig) -> TeacherConfig:
    """The teacher every student is measured against: one greedy answer per query. teacher.samples and
    temperature say how the labels are made, so students trained on labels made different ways share one
    reference, and an answer is reproducible."""
    return teacher.model_copy(update={"temperature": 0.0, "samples": 1})


def measure_all(setup: Setup, contestants: tuple[Contestant, ...]) -> dict[str, Measured]:
    """Each contestant in order; those on one server while it runs, one server at a time (so none slows
    another)."""
    measured: dict[str, Measured] = {}
    servers: dict[str, tuple[Server, list[Contestant]]] = {}
    for contestant in contestants:
        if contestant.measure is not None:
            measured[contestant.name] = contestant.measure(setup)
            continue
        server = contestant.server(setup)
        if isinstance(server, str):
            measured[contestant.name] = skipped(setup.config.student.model, contestant.served_as, server)
        elif server is not None:
            servers.setdefault(server.name, (server, []))[1].append(contestant)
    for server, members in servers.values():
        log = setup.layout.compare.server_log(server.name)
        with setup.recorder.timed(server.name), server.open(setup, log) as targets:
            for contestant in members:
                measured[contestant.name] = _sweep_one(setup, contestant, targets[contestant.name], log)
    return {c.name: measured[c.name] for c in contestants if c.name in measured}


def sweep(config: Config, target: Target, requests: list[dict[str, Any]], method: str, name: str,
          extra: list[dict[str, Any]]) -> Any:
    compare = config.compare
    return asyncio.run(measure_target(target, requests, method, compare.max_concurrency, compare.latency_slo_ms,
                                      compare.max_failed_share, name, extra))


def _sweep_one(setup: Setup, contestant: Contestant, target: Target, log: Path) -> Measured:
    config = setup.config
    result = sweep(config, target, contestant.requests(setup, setup.texts), contestant.method, contestant.label,
                   contestant.requests(setup, setup.pool))
    return from_sweep(config.student.model, contestant.served_as, contestant.price_per_hour(config), result,
                      setup.parse, str(log)).check_failures(config.compare.max_failed_share)


def prompt_only(setup: Setup, texts: list[str]) -> list[dict[str, Any]]:
    """The teacher's prompt as the reference teacher sends it, without asking for a rationale."""
    teacher = reference_teacher(setup.config.teacher).model_copy(update={"rationale": False})
    return [teacher_request(setup.task, teacher, t) for t in texts]


def baseline_server(config: Config, requests: list[dict[str, Any]]) -> Any:
    """The student's server options with a context that fits the teacher's prompt (plus its answer budget),
    counted with the student's own tokenizer, as far as the model's positions allow."""
    from transformers import AutoConfig, AutoTokenizer

    from distill.models import resolve_model
    from teacher.tokens import prompt_token_counts

    server = config.student.server
    path = resolve_model(config.student.model)
    needed = max(prompt_token_counts(AutoTokenizer.from_pretrained(path), requests), default=0) + max(
        r["max_tokens"] for r in requests)
    limit = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None) or needed
    length = max(server.max_model_len or 0, min(needed, limit))
    return server.model_copy(update={"max_model_len": length}) if server.max_model_len else server


@contextmanager
def _adapter_server(setup: Setup, log: Path) -> Iterator[dict[str, Target]]:
    """Base weights plus the adapter, whose context fits the teacher's prompt where the baseline shares it."""
    config = setup.config
    baseline = prompt_only(setup, setup.texts) if config.compare.prompt_baseline else []
    wide = baseline_server(config, baseline) if baseline else config.student.server
    adapter_config = config.model_copy(update={"student": config.student.model_copy(update={"server": wide})})
    with serve_adapter(adapter_config, setup.layout, log) as (student, base):
        yield {"adapter": student, "baseline": base}


@contextmanager
def _base_server(setup: Setup, log: Path) -> Iterator[dict[str, Target]]:
    """The student's base model alone (no adapter), for the prompt-only baseline where the adapter is not served."""
    from distill.models import resolve_model

    server = baseline_server(setup.config, prompt_only(setup, setup.texts))
    with VLLMServer(resolve_model(setup.config.student.model), BASE_NAME, server, log) as vllm:
        yield {"baseline": Target((vllm.base_url,), BASE_NAME)}


@contextmanager
def _merged_server(setup: Setup, log: Path) -> Iterator[dict[str, Target]]:
    with serve_merged(setup.config, setup.layout, log) as target:
        yield {"merged": target}


ADAPTER_SERVER = Server("student", _adapter_server)
BASE_SERVER = Server("baseline", _base_server)
MERGED_SERVER = Server("merged", _merged_server)


def trained_merged(layout: RunLayout) -> bool:
    """Whether the training that made this adapter also wrote `train/merged/`: its manifest lists the files, so a
    folder an earlier training left is never measured as this student."""
    return any(name.startswith("merged/") for name in read_manifest(layout, "train").get("outputs", {}))


def _students(setup: Setup, texts: list[str]) -> list[dict[str, Any]]:
    return student_requests(setup.task, setup.config, texts)


ADAPTER = Contestant(
    "adapter", "student", "base + LoRA adapter (vLLM --enable-lora)", _students,
    server=lambda s: DORA_SKIPPED if s.config.student.lora.use_dora else ADAPTER_SERVER)
BASELINE = Contestant(  # what fine-tuning bought over prompting alone
    "baseline", "base, prompted", BASELINE_SERVED, prompt_only, method="chat",
    server=lambda s: None if not (s.config.compare.prompt_baseline and s.texts)
    else BASE_SERVER if s.config.student.lora.use_dora else ADAPTER_SERVER)
MERGED = Contestant(
    "merged", "merged", "merged weights (adapter folded in)", _students,
    server=lambda s: MERGED_SERVER if trained_merged(s.layout) else None)
