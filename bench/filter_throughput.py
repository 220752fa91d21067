"""Filter-stage throughput on synthetic teacher outputs: validity, exact and near dedup over 1,000,000 rows.

    .venv/bin/python bench/filter_throughput.py            # 1,000,000 rows; goal: 60 s or less on 2 cores

The same rows are filtered twice in one run: with every filter (the measured stage) and, as the in-run
baseline, with near-dedup off, so the ratio shows what MinHash LSH costs on this machine. Peak memory is the
process's maximum resident set. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from distill.artifacts import write_json, write_rows
from distill.config import Config
from distill.filter.stage import filter_stage
from distill.layout import RunLayout

LABELS = [f"intent_{i}" for i in range(50)]


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Short support-like messages; 5% exact repeats (case/space changed), 5% near copies, 3% invalid."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(20_000)]
    rows = []
    for i in range(n):
        roll = rng.random()
        if rows and roll < 0.05:
            text = "  " + rows[rng.randrange(len(rows))]["text"].upper()
        elif rows and roll < 0.10:
            text = rows[rng.randrange(len(rows))]["text"] + " please"
        else:
            text = " ".join(rng.choices(vocabulary, k=rng.randint(6, 18)))
        label = None if rng.random() < 0.03 else rng.choice(LABELS)
        rows.append({"id": f"inputs:{i}", "text": text, "gold": None, "raw": label, "label": label,
                     "error": None if label else "not in the label set", "logprob": -rng.random(),
                     "vote_share": None, "prompt_tokens": 100, "completion_tokens": 3, "cached_tokens": 0,
                     "latency_ms": 10.0})
    return rows


def make_config(folder: Path, near_dup: float | None) -> Config:
    test = folder / "test.csv"
    test.write_text("text\nan unrelated held out question\n")
    return Config.model_validate({
        "name": "bench",
        "task": {"instruction": "Classify.", "labels": LABELS},
        "data": {"inputs": str(test), "test": str(test)},
        "teacher": {"model": "bench"},
        "filter": {"near_dup_threshold": near_dup},
        "student": {"model": "bench"},
        "cost": {"teacher_price_per_hour": 1, "student_price_per_hour": 1, "train_price_per_hour": 1},
    })


def timed_filter(folder: Path, near_dup: float | None) -> tuple[float, dict]:
    start = time.perf_counter()
    manifest = filter_stage(make_config(folder, near_dup), RunLayout(folder))
    return time.perf_counter() - start, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_rows(folder / "generate" / "outputs.parquet", synthetic_rows(args.rows))
        write_json(folder / "generate" / "manifest.json", {"stage": "generate"})
        baseline_s, _ = timed_filter(folder, None)
        seconds, manifest = timed_filter(folder, 0.8)
    result = {
        "rows": args.rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(args.rows / seconds),
        "baseline_seconds_without_near_dedup": round(baseline_s, 2),
        "ratio": round(seconds / baseline_s, 3),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "drops": manifest["drops"],
        "goal_seconds": 60,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
