"""Does the output constraint change what the teacher says? The opt-in guard `teacher.fidelity_check: N`.

A constraint should only remove answers that are invalid. N rows are sent twice at temperature 0, with and
without the constraint; wherever the unconstrained answer is valid, the constrained one should be the same, part
for part (each field of a JSON object, else the whole answer). generate writes the comparison, with examples of
what changed, to `generate/fidelity.json`, and the filter report shows it before anyone trains on the labels.
bench/constraint_fidelity.py measures the same thing, with quality against gold, on the shipped configs.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.artifacts import write_json
from distill.config import Config, TeacherConfig
from distill.data.inputs import Example
from distill.layout import GenerateFiles
from distill.stages import digest
from distill.tasks import Task
from teacher.client import Answer, Endpoint, Target, map_concurrent
from teacher.server import open_teacher

EXAMPLES = 5  # differences quoted in the report


@dataclass
class FidelityCheck:
    examples: list[Example]
    requests: list[dict[str, Any]]  # per example: the constrained request, then the unconstrained one
    rationale: bool = False  # answers carry a rationale (teacher.rationale)


def plan_check(config: Config, examples: Sequence[Example], skip: set[int] | dict[int, str],
               request: Callable[..., dict[str, Any]]) -> FidelityCheck | None:
    """The sample's requests (None when the check is off). `request(teacher, text, constrained=...)` builds one;
    rows in `skip` (not sent at all) are never sampled."""
    size = config.teacher.fidelity_check
    if not size:
        return None
    eligible = [e for i, e in enumerate(examples) if i not in skip]
    chosen = random.Random(config.data.seed).sample(eligible, min(size, len(eligible)))
    # Greedy and one sample, so a difference is the constraint's doing and not the sampler's.
    greedy: TeacherConfig = config.teacher.model_copy(update={"temperature": 0.0, "samples": 1})
    requests = [request(greedy, e.text, constrained=c) for e in chosen for c in (True, False)]
    return FidelityCheck(chosen, requests, config.teacher.rationale)


def agreement(task: Task, pairs: Sequence[tuple[str | None, str | None]]) -> dict[str, Any]:
    """How often a constrained answer equals the unconstrained one, over pairs (constrained, unconstrained) whose
    unconstrained answer is valid: whole answers, and parts (JSON fields; a label or text is one part)."""
    valid = [(c, f) for c, f in pairs if f is not None]
    matches = [task.part_matches(c, f) for c, f in valid]
    parts = sum(len(m) for m in matches)
    return {
        "unconstrained_valid": len(valid),
        "same_answer": sum(all(m) for m in matches),
        "answer_agreement": sum(all(m) for m in matches) / len(valid) if valid else None,
        "field_agreement": sum(sum(m) for m in matches) / parts if parts else None,
    }


def summarise(task: Task, check: FidelityCheck, answers: Sequence[Answer | None]) -> dict[str, Any]:
    """The check's result for `generate/fidelity.json`: agreement, invalid counts and examples of differences."""
    texts = [a.text if a is not None else None for a in answers]
    constrained = [task.parse(t, check.rationale) for t in texts[0::2]]
    free = [task.parse(t, check.rationale) for t in texts[1::2]]
    result = agreement(task, [(c.value, f.value) for c, f in zip(constrained, free, strict=True)])
    differences = [
        {"id": e.id, "text": e.text[:300], "constrained": c.value or texts[2 * i], "unconstrained": f.value}
        for i, (e, c, f) in enumerate(zip(check.examples, constrained, free, strict=True))
        if f.value is not None and not all(task.part_matches(c.value, f.value))]
    return {"sample": len(check.examples), **result,
            "constrained_invalid": sum(c.value is None for c in constrained),
            "unconstrained_invalid": sum(f.value is None for f in free),
            "differences": len(differences), "examples": differences[:EXAMPLES]}


def verdict(result: dict[str, Any]) -> str:
    """One line for reports: whether the constraint changed answers the teacher would have given validly."""
    if not result["unconstrained_valid"]:
        return (f"constraint fidelity: none of {result['sample']} unconstrained answers was valid, so nothing "
                "to compare")
    if result["differences"] == 0:
        return (f"constraint fidelity: the constraint changed none of the {result['unconstrained_valid']} "
                "answers the teacher gave validly without it")
    return (f"WARNING constraint fidelity: the constraint changed {result['differences']} of "
            f"{result['unconstrained_valid']} answers the teacher gave validly without it (field agreement "
            f"{result['field_agreement']:.3f}); the labels may be worse than the teacher: see the examples")


def run(config: Config, task: Task, examples: Sequence[Example], skip: set[int] | dict[int, str],
        files: GenerateFiles, request: Callable[..., dict[str, Any]], fingerprint: dict[str, Any]) -> list[Path]:
    """Make the check when `teacher.fidelity_check` asks for it and write `generate/fidelity.json` (the files
    written). The result is kept while its requests stay the same, so a rerun sends nothing; with the check off an
    old result is removed, so no report quotes a check this run did not make."""
    check = plan_check(config, examples, skip, request)
    if check is None:
        files.fidelity.unlink(missing_ok=True)
        return []
    key = digest({"teacher": fingerprint, "requests": check.requests})  # new weights, new check
    old = load(files.fidelity)
    if old is None or old.get("key") != key:
        with open_teacher(config.teacher, files.server_log) as target:
            answers = asyncio.run(_ask(target, config.teacher, check.requests))
        write_json(files.fidelity, {"key": key, **summarise(task, check, answers)})
    return [files.fidelity]


async def _ask(target: Target, teacher: TeacherConfig, requests: list[dict[str, Any]]) -> list[Answer | None]:
    endpoint = Endpoint(target, teacher.request_timeout_s, teacher.max_retries)
    try:
        return await map_concurrent(requests, lambda r: endpoint.chat(**r), teacher.concurrency, "fidelity check")
    finally:
        await endpoint.close()


def load(path: Path) -> dict[str, Any] | None:
    """The check's result for the filter report; None where generate made no check."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def markdown(result: dict[str, Any] | None) -> list[str]:
    """The filter report's section on the check: the verdict and the answers the constraint changed."""
    if result is None:
        return []
    return ["", "## Constraint fidelity", "", verdict(result), "",
            *[f"- {e['id']}: \"{e['text'][:120]}\": constrained {e['constrained']}, unconstrained "
              f"{e['unconstrained']}" for e in result["examples"]]]
