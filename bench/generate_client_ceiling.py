"""The generate stage's own ceiling: an instant local server, the stage vs a bare async client loop.

    .venv/bin/python bench/generate_client_ceiling.py     # about 6 minutes on 2 cores

The server (bench/instant_openai.py, its own process) answers as fast as it can, so what is measured is the
client side of generate: reading and splitting the input, building each request, sending it, parsing the
answer, committing it to the answer cache (on, as in every run) and writing outputs.parquet. The baseline is
the plainest correct client on the same server with the same HTTP client (aiohttp + msgspec, uvloop), the same
requests built the same way and the same number in flight, keeping each answer's text in a list. Each side runs
in a fresh process, so peak memory (ru_maxrss) is its own.

This machine is shared, so the ratio comes from paired rounds: bare and stage on 100,000 rows in turn (the order
swapped each round), the ratio of each pair, and the median of 3 rounds (`ratio`; each in `ratio_rounds`).
`cpu_ratio` is the same from each process's CPU seconds (all threads), steadier under other load. One run of each
on 1,000,000 rows then gives `answers_per_s`, `peak_rss_mb` and `rss_ratio_1m_vs_100k` (against the highest
100k peak: memory must stay flat as rows grow). The last line is that JSON object.

Measured 2026-11-26 (2 cores, nothing else running): 5,811 answers/s at 1M rows (bare 11,223); ratio 0.62
(rounds 0.76, 0.62, 0.61), cpu_ratio 0.60; peak RSS 289 MB at 1M rows vs 210 MB at 100k (1.38x; bare 272 MB).
On 16 cores (a lent GPU machine, same day): 6,352 answers/s (bare 9,748), ratio 0.73 (0.74, 0.71, 0.73), peak
RSS 281 MB at 1M rows vs 205 MB at 100k: more cores raise the ratio little, the cost is on the loop's own thread.
The loop waits for the cache's commits once they are 8 groups behind; without that bound one run gave 0.87 but
held 1,120 MB of uncommitted answers at 1M rows.
What is left (py-spy, 100k rows): on the event loop's thread, aiohttp's own request path is most of both sides;
the stage adds output rows and row groups (7% of its samples), chunk rows and cache keys (3%), the split, plan
and test file (4%), response parsing (2%) and worker bookkeeping (3%); beside it, the cache's commit thread
spends 15 us of CPU per answer at 100k rows and 22 us at 1M (random keys into SQLite's index, written to the WAL
and checkpointed), on the cores the client and the server share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LABELS = ["billing", "refund", "shipping", "account_access", "technical_issue", "cancellation",
          "product_question", "feedback"]
CONCURRENCY = 128


def write_inputs(path: Path, rows: int) -> Path:
    """Distinct, realistic-length support messages (about 60 characters)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("text\n")
        for i in range(rows):
            handle.write(f"Customer {i} asks why order {i * 7919 % 1000003} was charged twice this month\n")
    return path


def make_config(url: str, inputs: Path, test: Path, rows: int) -> object:
    from distill.config import Config

    return Config.model_validate({
        "name": "ceiling",
        "task": {"instruction": "Route the support message to one team.", "labels": LABELS},
        "data": {"inputs": str(inputs), "test": str(test), "max_inputs": rows},
        "teacher": {"model": "instant", "url": url, "concurrency": CONCURRENCY, "max_tokens": 8, "top_logprobs": 1},
        "student": {"model": "instant"},
        "cost": {"teacher_price_per_hour": 1, "student_price_per_hour": 1, "train_price_per_hour": 1},
    })


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """This process's CPU time, all its threads: less swayed than wall time by other work on the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_stage(url: str, inputs: Path, test: Path, rows: int, folder: Path) -> dict:
    from distill.layout import RunLayout
    from teacher.generate import generate

    start, cpu = time.perf_counter(), cpu_seconds()
    manifest = generate(make_config(url, inputs, test, rows), RunLayout(folder))
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    assert manifest["counts"]["labelled"] == rows, manifest["counts"]
    return {"seconds": seconds, "cpu_s": cpu, "answers": rows, "peak_rss_mb": peak_rss_mb()}


def run_bare(url: str, inputs: Path, test: Path, rows: int, folder: Path) -> dict:
    """The baseline: N workers over the texts, each builds a request, posts it and keeps the answer's text."""
    import aiohttp
    import msgspec
    import uvloop

    from distill.tasks import make_task
    from teacher.protocol import teacher_request

    config = make_config(url, inputs, test, rows)
    task = make_task(config.task)
    with open(inputs, encoding="utf-8") as handle:
        texts = [line.rstrip("\n") for line in handle][1:rows + 1]
    encode, decode = msgspec.json.Encoder().encode, msgspec.json.Decoder().decode
    answers: list[str] = []

    async def loop() -> None:
        rows_left = iter(texts)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def worker() -> None:
                for text in rows_left:
                    body = {"model": "instant", **teacher_request(task, config.teacher, text)}
                    body.update(body.pop("extra_body", {}))
                    async with session.post(url + "/chat/completions", data=encode(body),
                                            headers={"Content-Type": "application/json"}) as response:
                        answers.append(decode(await response.read())["choices"][0]["message"]["content"])

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    start, cpu = time.perf_counter(), cpu_seconds()
    uvloop.run(loop())
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    assert len(answers) == rows
    return {"seconds": seconds, "cpu_s": cpu, "answers": rows, "peak_rss_mb": peak_rss_mb()}


def child(kind: str, url: str, inputs: Path, test: Path, rows: int, folder: Path) -> dict:
    """Run one side in a fresh process and read back its JSON line."""
    command = [sys.executable, __file__, "--side", kind, "--url", url, "--inputs", str(inputs), "--test", str(test),
               "--rows", str(rows), "--folder", str(folder)]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # keep the caller's too
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": path})
    if done.returncode:
        raise SystemExit(f"the {kind} side failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rate(run: dict) -> float:
    return run["answers"] / run["seconds"]


def paired_rounds(url: str, inputs: Path, test: Path, rows: int, rounds: int, scratch: Path) -> list[dict]:
    """Bare and stage runs in turn (the order swapped each round, so a drift in the machine's load favours
    neither side): each round's ratio compares runs made about the same time."""
    results = []
    for index in range(rounds):
        sides = ("bare", "stage") if index % 2 == 0 else ("stage", "bare")
        runs = {side: child(side, url, inputs, test, rows, scratch / f"{side}{index}") for side in sides}
        results.append({**runs, "ratio": rate(runs["stage"]) / rate(runs["bare"]),
                        "cpu_ratio": (runs["bare"]["cpu_s"] / runs["bare"]["answers"])
                        / (runs["stage"]["cpu_s"] / runs["stage"]["answers"])})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small-rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", choices=["stage", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--test", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run = run_stage if args.side == "stage" else run_bare
        print(json.dumps(run(args.url, args.inputs, args.test, args.rows, args.folder)))
        return
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        test = write_inputs(scratch / "test.csv", 10)
        # Each size its own file: 100k rows cut from a 1M-row file would still read (and index) 1M rows.
        small_inputs = write_inputs(scratch / "small.csv", args.small_rows)
        inputs = write_inputs(scratch / "inputs.csv", args.rows)
        from teacher.server import free_port

        port = free_port()
        server = subprocess.Popen([sys.executable, str(REPO / "bench" / "instant_openai.py"), str(port)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            url = f"http://127.0.0.1:{port}/v1"
            rounds = paired_rounds(url, small_inputs, test, args.small_rows, args.rounds, scratch)
            big = {side: child(side, url, inputs, test, args.rows, scratch / f"{side}-big")
                   for side in ("bare", "stage")}
        finally:
            server.terminate()
            server.wait()
    print(json.dumps(summary(args, rounds, big)))


def summary(args: argparse.Namespace, rounds: list[dict], big: dict[str, dict]) -> dict:
    stage, bare = big["stage"], big["bare"]
    small_peak = max(r["stage"]["peak_rss_mb"] for r in rounds)
    return {
        "answers_per_s": round(rate(stage), 1),
        "bare_answers_per_s": round(rate(bare), 1),
        "ratio": round(statistics.median(r["ratio"] for r in rounds), 4),
        "ratio_rounds": [round(r["ratio"], 4) for r in rounds],
        "cpu_ratio": round(statistics.median(r["cpu_ratio"] for r in rounds), 4),
        "ratio_one_run_at_rows": round(rate(stage) / rate(bare), 4),
        "rows": args.rows,
        "peak_rss_mb": round(stage["peak_rss_mb"], 1),
        "bare_peak_rss_mb": round(bare["peak_rss_mb"], 1),
        "small_rows": args.small_rows,
        "small_answers_per_s": round(statistics.median(rate(r["stage"]) for r in rounds), 1),
        "small_bare_answers_per_s": round(statistics.median(rate(r["bare"]) for r in rounds), 1),
        "small_peak_rss_mb": round(small_peak, 1),
        "rss_ratio_1m_vs_100k": round(stage["peak_rss_mb"] / small_peak, 3),
        "concurrency": CONCURRENCY,
        "cache": "on",
    }


if __name__ == "__main__":
    main()
