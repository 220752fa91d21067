"""Rows at scale: synthetic teacher outputs pushed through the filter stage (checks, dedup, drops, the seeded
train/eval split) at 1 million and at 10 million rows, each in a child process of its own.

    .venv/bin/python bench/scale_rows.py                 # 1M then 10M rows, near-dedup at 0.8 as shipped
    .venv/bin/python bench/scale_rows.py --rows 200000 1000000
    .venv/bin/python bench/scale_rows.py --no-near-dup   # without near-dedup's index

The rows are what generate writes for a classification task with 77 labels: a finished `generate/` folder
(outputs.parquet in its own schema, test.parquet, a manifest) and a config. 5% of texts repeat an earlier one
(case and spaces changed), 5% are near copies (a word added), 3% of answers are invalid, 1% of rows carry gold
(the filter's audit keeps those).
Near-dedup runs at the shipped default (`filter.near_dup_threshold: 0.8`; `--near-dup` sets another threshold,
`--no-near-dup` turns it off): its index is on disk, in the filter's scratch folder (distill/filter/neardup.py),
so its memory does not grow with the rows; exact dedup is on. Train's tokenisation is not run here.

The smallest size is the in-run baseline: `ratio` is the time per million rows at the largest size over that at
the smallest (goal <= 2), and `peak_rss_mb` the largest size's peak resident memory (goal <= 1,536 MB), read by
the child itself; `cpu_ratio` is the same ratio in the child's CPU seconds, which other processes on a shared
machine do not lengthen. Writing the synthetic input is not timed. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

LABELS = [f"intent_{i:02d}" for i in range(77)]
VOCABULARY = [f"w{i}" for i in range(20_000)]
CHUNK = 200_000


def synthetic_chunk(start: int, n: int) -> dict[str, list]:
    """Rows start..start+n-1 as generate's columns; a row's words follow from its number, so a repeat of an
    earlier row (anywhere in the file) is a row built from that row's number."""
    import numpy as np

    rng = np.random.default_rng(start)
    number = np.arange(start, start + n, dtype=np.int64)
    roll = rng.random(n)
    repeat, near = (roll < 0.05) & (number > 0), (roll >= 0.05) & (roll < 0.10) & (number > 0)
    source = np.where(repeat | near, (rng.random(n) * np.maximum(number, 1)).astype(np.int64), number)
    lengths = 6 + source % 13
    mixed = (source[:, None] * 18 + np.arange(18)[None, :]).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    words = (mixed ^ (mixed >> np.uint64(29))) % np.uint64(len(VOCABULARY))
    texts = [" ".join(VOCABULARY[w] for w in row[:length]) for row, length in zip(words.tolist(), lengths.tolist(),
                                                                                    strict=True)]
    texts = ["  " + t.upper() if r else t + " please" if c else t
             for t, r, c in zip(texts, repeat.tolist(), near.tolist(), strict=True)]
    labels = [None if rng.random() < 0.03 else LABELS[(k * 31) % len(LABELS)] for k in number.tolist()]
    gold = [LABELS[(k * 17) % len(LABELS)] if k % 100 == 0 else None for k in number.tolist()]
    return {"id": [f"inputs:{k}" for k in number.tolist()], "text": texts, "gold": gold, "raw": labels,
            "label": labels, "error": [None if x else "not in the label set" for x in labels],
            "rationale": [None] * n, "vote_share": [None] * n, "samples": ["[]"] * n,
            "logprob": (-rng.random(n)).tolist(), "top_logprobs": ["[]"] * n, "prompt_tokens": [600] * n,
            "completion_tokens": [3] * n, "cached_tokens": [0] * n, "latency_ms": [10.0] * n,
            "finish_reason": ["stop"] * n, "serving_s": [0.01] * n}


def write_generate_folder(folder: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.artifacts import write_json, write_rows
    from distill.layout import RunLayout
    from teacher.rows import teacher_schema

    layout = RunLayout(folder)
    layout.generate.outputs.parent.mkdir(parents=True, exist_ok=True)
    schema = teacher_schema()
    with pq.ParquetWriter(layout.generate.outputs, schema) as writer:
        for start in range(0, rows, CHUNK):
            table = pa.table(synthetic_chunk(start, min(CHUNK, rows - start)), schema=schema)
            writer.write_table(table, row_group_size=4_096)  # as generate writes it: a row group per chunk
    write_rows(layout.generate.test, [{"id": "test:0", "text": "an unrelated held out question", "gold": None}])
    write_json(layout.manifest("generate"), {"stage": "generate"})


def make_config(folder: Path, near_dup: float | None = None):
    from distill.config import Config

    test = folder / "test.csv"
    test.write_text("text\nan unrelated held out question\n")
    return Config.model_validate({
        "name": "scale", "task": {"instruction": "Classify.", "labels": LABELS},
        "data": {"inputs": str(test), "test": str(test)}, "teacher": {"model": "bench"},
        "filter": {"near_dup_threshold": near_dup}, "student": {"model": "bench"},
        "cost": {"teacher_price_per_hour": 1, "student_price_per_hour": 1, "train_price_per_hour": 1},
    })


def run_filter(folder: str, near_dup: float | None, queue: multiprocessing.Queue) -> None:
    """In a child: the filter stage alone, timed, with this process's peak memory."""
    from distill.filter.stage import filter_stage
    from distill.layout import RunLayout

    config = make_config(Path(folder), near_dup)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    manifest = filter_stage(config, RunLayout(Path(folder)))
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds too: on a shared machine, wall time also counts the other processes' turns.
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    queue.put({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": after.ru_maxrss / 1024,
               "rss_before_mb": before.ru_maxrss / 1024, "counts": manifest["counts"], "drops": manifest["drops"]})


def measure(rows: int, near_dup: float | None) -> dict:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of the parent's memory
    with tempfile.TemporaryDirectory() as name:
        writer = context.Process(target=write_generate_folder, args=(Path(name), rows))
        writer.start()
        writer.join()
        queue = context.Queue()
        child = context.Process(target=run_filter, args=(name, near_dup, queue))
        child.start()
        result = queue.get()
        child.join()
    return {"rows": rows, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000],
                        help="sizes in rising order; the first is the baseline")
    parser.add_argument("--near-dup", type=float, default=0.8,
                        help="filter.near_dup_threshold (default: 0.8, the shipped default)")
    parser.add_argument("--no-near-dup", action="store_true", help="near-dedup off (filter.near_dup_threshold: null)")
    args = parser.parse_args()
    near_dup = None if args.no_near_dup else args.near_dup
    runs = []
    for rows in args.rows:
        runs.append(measure(rows, near_dup))
        print(json.dumps(runs[-1]), flush=True)
    small, large = runs[0], runs[-1]
    per_million = [run["seconds"] / run["rows"] * 1e6 for run in runs]
    print(json.dumps({
        "rows": large["rows"],
        "baseline_rows": small["rows"],
        "peak_rss_mb": round(large["peak_rss_mb"]),
        "peak_rss_mb_at_baseline": round(small["peak_rss_mb"]),
        # Named for the default sizes; with --rows, at the first and the last size.
        "s_per_million_rows_at_1m": round(per_million[0], 2),
        "s_per_million_rows_at_10m": round(per_million[-1], 2),
        "ratio": round(per_million[-1] / per_million[0], 3),
        "seconds": [round(run["seconds"], 1) for run in runs],
        "cpu_seconds": [round(run["cpu_seconds"], 1) for run in runs],
        "cpu_ratio": round(runs[-1]["cpu_seconds"] / large["rows"] / (small["cpu_seconds"] / small["rows"]), 3),
        "counts": large["counts"],
        "near_dup_threshold": near_dup,
        "goal": {"peak_rss_mb": 1536, "ratio": 2.0},
    }))


if __name__ == "__main__":
    main()
