"""Does the output constraint change the teacher's answers? The same prompts to the same teacher, with and without it.

    .venv/bin/python bench/constraint_fidelity.py   # Qwen2.5-Coder-1.5B-Instruct through vLLM: ~7 min on 2 cores

A constraint should only remove invalid answers. For each shipped task type (configs/restaurant8k.yaml
extraction, configs/call_summary.yaml generation, configs/demo.yaml classification) the same rows with gold are
sent at temperature 0 without a constraint and under each constraint variant: `after` (what the task sends now),
`before` (the baseline: what it sent before, compact JSON with the raw schema in the prompt) and alternatives
checked on the way. One vLLM server (started with free JSON whitespace, so each variant's layout is its own)
answers everything.

Among the rows whose unconstrained answer (to the same prompt) is valid: `field_agreement` is the share of parts
(JSON fields; a label or a text is one part) on which the constrained answer is the same, and
`constrained_quality` / `unconstrained_valid_quality` score both against gold on those rows. Goal, for `after` on
every task: field_agreement >= 0.98 and constrained_quality >= unconstrained_valid_quality. The last line is JSON:
per task the `after` numbers, then `before` and the alternatives in full.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.config import Config, ServerConfig, load_config
from distill.data.inputs import Example, split_inputs
from distill.models import resolve_model
from distill.tasks import Task, make_task
from distill.tasks.extraction import JSON_SEPARATORS, json_grammar
from teacher.client import Answer, Endpoint, Target, map_concurrent
from teacher.fidelity import agreement
from teacher.protocol import teacher_request
from teacher.server import VLLMServer

REPO = Path(__file__).resolve().parents[1]
TEACHER = "qwen2.5-coder-1.5b-instruct"
ROWS = {"restaurant8k": 32, "call_summary": 24, "demo": 32}
GOAL_AGREEMENT = 0.98

Messages = Callable[[str], list[dict[str, str]]]


@dataclass
class Variant:
    prompt: str  # which of the case's prompts it answers
    constraint: dict[str, Any]
    task: Task | None = None  # what judges validity, where the variant changes the format; else the case's task


@dataclass
class Case:
    name: str
    config: Config
    task: Task
    rows: list[Example]
    prompts: dict[str, Messages]
    variants: dict[str, Variant]  # "after", "before", then alternatives


def legacy_extraction_messages(task: Task) -> Messages:
    """The extraction prompt as it was: the instruction, then the raw JSON schema."""
    system = (f"{task.settings.instruction.strip()}\n\nReply with one JSON object that follows this JSON schema; "
              "leave out fields the text does not give, or set them to null.\n"
              + json.dumps(task.schema, ensure_ascii=False))
    return lambda text: [{"role": "system", "content": system}, {"role": "user", "content": text}]


def extraction_variants(task: Task) -> tuple[dict[str, Messages], dict[str, Variant]]:
    compact = {"grammar": json_grammar(task.schema, JSON_SEPARATORS["compact"])}
    prompts = {"now": task.teacher_messages, "legacy": legacy_extraction_messages(task)}
    return prompts, {"after": Variant("now", task.teacher_constraint()), "before": Variant("legacy", compact),
                     "compact_with_new_prompt": Variant("now", compact),
                     "free_whitespace": Variant("now", {"json": task.schema})}


def classification_variants(task: Task) -> tuple[dict[str, Messages], dict[str, Variant]]:
    assert task.labels is not None
    choice = task.teacher_constraint()
    return {"now": task.teacher_messages}, {
        "after": Variant("now", choice), "before": Variant("now", choice),
        "labels_with_leading_space": Variant("now", {"choice": [" " + label for label in task.labels]})}


def generation_variants(task: Task) -> tuple[dict[str, Messages], dict[str, Variant]]:
    regex = task.teacher_constraint()
    assert regex is not None
    # The teacher capitalises Action and Follow-up words when free ("Refund", "Yes"); a format that allows it.
    relaxed = regex["regex"].replace("(refund|replacement|callback|explained|escalated)",
                                     "([Rr]efund|[Rr]eplacement|[Cc]allback|[Ee]xplained|[Ee]scalated)")
    relaxed = relaxed.replace("(yes|no)", "([Yy]es|[Nn]o)")
    relaxed_task = make_task(task.settings.model_copy(update={"format_regex": relaxed}))
    return {"now": task.teacher_messages}, {"after": Variant("now", regex), "before": Variant("now", regex),
                                            "capitals_allowed": Variant("now", {"regex": relaxed}, relaxed_task)}


def make_case(name: str) -> Case:
    config = load_config(REPO / "configs" / f"{name}.yaml")
    task = make_task(config.task)
    splits = split_inputs(config)
    rows = [e for e in splits.test + splits.to_label if e.gold is not None][: ROWS[name]]
    build = {"extraction": extraction_variants, "classification": classification_variants,
             "generation": generation_variants}[task.name]
    prompts, variants = build(task)
    return Case(name, config, task, rows, prompts, variants)


def request(case: Case, text: str, prompt: str, constraint: dict[str, Any] | None) -> dict[str, Any]:
    greedy = case.config.teacher.model_copy(update={"temperature": 0.0, "samples": 1, "top_logprobs": 0})
    body = teacher_request(case.task, greedy, text, constrained=False)
    body["messages"] = case.prompts[prompt](text)
    if constraint is not None:
        body["extra_body"] = {"structured_outputs": constraint}
    return body


def all_requests(cases: list[Case]) -> list[tuple[str, str, dict[str, Any]]]:
    """(case, set, request) for every row: one unconstrained set per prompt, one set per variant."""
    sets = []
    for case in cases:
        sets += [(case, f"free:{prompt}", prompt, None) for prompt in case.prompts]
        sets += [(case, name, v.prompt, v.constraint) for name, v in case.variants.items()]
    return [(case.name, label, request(case, e.text, prompt, constraint))
            for case, label, prompt, constraint in sets for e in case.rows]


def ask(requests: list[dict[str, Any]], log: Path) -> tuple[list[Answer | None], float]:
    server = ServerConfig(max_model_len=2048, cpu_kv_cache_gib=3, compact_json=False)
    with VLLMServer(resolve_model(TEACHER), "teacher", server, log) as vllm:
        async def run() -> list[Answer | None]:
            endpoint = Endpoint(Target((vllm.base_url,), "teacher"), 600, 2)
            try:
                return await map_concurrent(requests, lambda r: endpoint.chat(**r), 16, "constraint fidelity")
            finally:
                await endpoint.close()

        start = time.perf_counter()
        answers = asyncio.run(run())
        return answers, time.perf_counter() - start


def measure(case: Case, variant: Variant, constrained: list[Answer | None], free: list[Answer | None]
            ) -> dict[str, Any]:
    """Agreement and quality of one variant against the unconstrained answers to the same prompt."""
    task = variant.task or case.task
    mine = [task.parse(a.text if a else None).value for a in constrained]
    theirs = [task.parse(a.text if a else None).value for a in free]
    gold = [task.parse_gold(e.gold) for e in case.rows if e.gold is not None]
    both = [i for i, value in enumerate(theirs) if value is not None]
    result = agreement(task, list(zip(mine, theirs, strict=True)))
    return {
        "field_agreement": result["field_agreement"],
        "constrained_quality": _mean(task.score(mine[i], gold[i]) for i in both),
        "unconstrained_valid_quality": _mean(task.score(theirs[i], gold[i]) for i in both),
        "unconstrained_valid": len(both), "same_answer": result["same_answer"],
        "constrained_valid": sum(v is not None for v in mine),
        "constrained_quality_all_rows": _mean(task.score(mine[i], gold[i]) for i in range(len(gold))),
        "completion_tokens_per_answer": _mean(a.completion_tokens for a in constrained if a is not None),
    }


def _mean(values: Any) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else None


def met(numbers: dict[str, Any]) -> bool:
    if numbers["field_agreement"] is None:
        return False
    return (numbers["field_agreement"] >= GOAL_AGREEMENT
            and numbers["constrained_quality"] >= numbers["unconstrained_valid_quality"])


def report(case: Case, answers: dict[str, list[Answer | None]]) -> dict[str, Any]:
    variants = {name: measure(case, v, answers[name], answers[f"free:{v.prompt}"])
                for name, v in case.variants.items()}
    after = variants.pop("after")
    compact = variants.get("compact_with_new_prompt")
    if compact:  # what compact JSON would save in answer tokens, with the same prompt
        after["compact_saves_tokens"] = round(1 - compact["completion_tokens_per_answer"]
                                              / after["completion_tokens_per_answer"], 4)
    return {**after, "type": case.task.name, "quality_name": case.task.quality_name, "rows": len(case.rows),
            "goal_met": met(after), "before": variants.pop("before"), "alternatives": variants}


def main() -> None:
    cases = [make_case(name) for name in ROWS]
    requests = all_requests(cases)
    # Where a variant is unchanged (before == after) its requests are sent once.
    unique = {json.dumps(r, sort_keys=True): r for _, _, r in requests}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{len(unique)} requests to {TEACHER}", file=sys.stderr)
        sent, seconds = ask(list(unique.values()), Path(tmp) / "server.log")
    by_key = dict(zip(unique, sent, strict=True))
    answers = [by_key[json.dumps(r, sort_keys=True)] for _, _, r in requests]
    grouped: dict[str, dict[str, list[Answer | None]]] = {}
    for (case, label, _), answer in zip(requests, answers, strict=True):
        grouped.setdefault(case, {}).setdefault(label, []).append(answer)
    tasks = {case.name: report(case, grouped[case.name]) for case in cases}
    for name, numbers in tasks.items():
        print(f"{name:13s} after: agreement {numbers['field_agreement']}, constrained {numbers['constrained_quality']}"
              f" vs unconstrained-valid {numbers['unconstrained_valid_quality']} ({numbers['unconstrained_valid']} "
              f"rows); before: agreement {numbers['before']['field_agreement']}, constrained "
              f"{numbers['before']['constrained_quality']} vs {numbers['before']['unconstrained_valid_quality']}")
    print(json.dumps({"teacher": TEACHER, "seconds": round(seconds, 1), "goal_met": all(t["goal_met"] for t in
                                                                                         tasks.values()),
                      "tasks": tasks}))


if __name__ == "__main__":
    main()
