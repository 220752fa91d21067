"""Generate-stage throughput against a bare async OpenAI-client loop, same prompts, same vLLM server.

    .venv/bin/python bench/generate_throughput.py   # SmolLM2-135M, 4 rounds x 100 BANKING77 prompts

Rounds alternate bare / stage / stage / bare so drift on a noisy machine cancels, and every round sends
prompts no earlier round sent (a repeated prompt would be served from vLLM's prefix cache and look faster).
The shared instruction (77 labels) is cached across rounds for both sides alike. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import tempfile
import time
from pathlib import Path

import openai

from distill.config import Config
from distill.layout import RunLayout
from distill.models import resolve_model
from distill.tasks import make_task
from teacher.client import Target
from teacher.generate import generate
from teacher.protocol import teacher_request
from teacher.server import VLLMServer, prefix_cache_counters

REPO = Path(__file__).resolve().parents[1]
BANKING = REPO.parent / "shared" / "data" / "banking77"


def load_texts(n: int) -> tuple[list[str], list[str]]:
    """Distinct input texts and the label set: BANKING77 where ../shared is present, else the demo inbox."""
    if BANKING.exists():
        with open(BANKING / "test.csv", encoding="utf-8") as handle:
            texts = [row["text"] for row in csv.DictReader(handle)]
        labels = json.loads((BANKING / "categories.json").read_text())
    else:
        with open(REPO / "configs" / "data" / "support_inbox.csv", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        texts, labels = [r["text"] for r in rows], sorted({r["category"] for r in rows})
    texts = list(dict.fromkeys(texts))
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} distinct texts for {n} prompts; ask for fewer")
    return texts[:n], labels


def make_config(model: str, url: str, labels: list[str], inputs: Path, held_out: Path, concurrency: int) -> Config:
    return Config.model_validate({
        "name": "bench",
        "task": {"instruction": "Classify the bank customer's message into one intent.", "labels": labels},
        "data": {"inputs": str(inputs), "test": str(held_out)},
        "teacher": {"model": model, "url": url, "concurrency": concurrency, "max_tokens": 24},
        "student": {"model": model},
        "cost": {"teacher_price_per_hour": 1, "student_price_per_hour": 1, "train_price_per_hour": 1},
    })


async def bare_loop(url: str, model: str, requests: list[dict], concurrency: int) -> tuple[float, int]:
    """The baseline: the plainest correct client, a semaphore around AsyncOpenAI calls. Seconds and tokens."""
    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY")
    limit = asyncio.Semaphore(concurrency)

    async def one(request: dict) -> int:
        async with limit:
            response = await client.chat.completions.create(model=model, **request)
        return response.usage.total_tokens

    start = time.perf_counter()
    tokens = await asyncio.gather(*(one(r) for r in requests))
    seconds = time.perf_counter() - start
    await client.close()
    return seconds, sum(tokens)


def write_inputs(folder: Path, name: str, texts: list[str]) -> Path:
    path = folder / f"{name}.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts-per-round", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    n = args.prompts_per_round
    texts, labels = load_texts(4 * n + 1)
    rounds = [texts[i * n:(i + 1) * n] for i in range(4)]
    order = ["bare", "stage", "stage", "bare"]
    seconds = {"bare": 0.0, "stage": 0.0}
    tokens = {"bare": 0, "stage": 0}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        held_out = write_inputs(scratch, "held_out", texts[-1:])
        server_config = make_config(args.model, "http://unused", labels, held_out, held_out, 1).teacher.server
        with VLLMServer(resolve_model(args.model), "bench", server_config, scratch / "server.log") as server:
            config = make_config("bench", server.base_url, labels, held_out, held_out, args.concurrency)
            task = make_task(config.task)
            warm = [teacher_request(task, config.teacher, t) for t in texts[4 * n:4 * n + 1]]
            asyncio.run(bare_loop(server.base_url, "bench", warm, 1))  # compiles the label grammar once
            target = Target((server.base_url,), "bench")
            counters_before = prefix_cache_counters(target)
            for index, (kind, round_texts) in enumerate(zip(order, rounds, strict=True)):
                if kind == "bare":
                    requests = [teacher_request(task, config.teacher, t) for t in round_texts]
                    spent, used = asyncio.run(bare_loop(server.base_url, "bench", requests, args.concurrency))
                    seconds["bare"] += spent
                    tokens["bare"] += used
                else:
                    inputs = write_inputs(scratch, f"round{index}", round_texts)
                    round_config = make_config("bench", server.base_url, labels, inputs, held_out, args.concurrency)
                    start = time.perf_counter()
                    manifest = generate(round_config, RunLayout(scratch / f"run{index}"))
                    seconds["stage"] += time.perf_counter() - start
                    assert manifest["counts"]["labelled"] == n, manifest["counts"]
                    tokens["stage"] += sum(manifest["usage"].values())
            counters_after = prefix_cache_counters(target)
    qps = {kind: 2 * n / s for kind, s in seconds.items()}
    hits = counters_after["hits"] - counters_before["hits"] if counters_after and counters_before else None
    queries = counters_after["queries"] - counters_before["queries"] if counters_after and counters_before else None
    result = {
        "ratio": round(qps["stage"] / qps["bare"], 4),
        "stage_queries_per_s": round(qps["stage"], 3),
        "bare_queries_per_s": round(qps["bare"], 3),
        "stage_tokens_per_s": round(tokens["stage"] / seconds["stage"], 1),
        "bare_tokens_per_s": round(tokens["bare"] / seconds["bare"], 1),
        "prompts": 4 * n,
        "concurrency": args.concurrency,
        "model": args.model,
        "labels": len(labels),
        "prefix_cache_hit_rate": round(hits / queries, 4) if queries else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
