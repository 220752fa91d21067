"""The shipped BANKING77 recipe against a strong teacher's recorded answers, checked against its quality goals.

    .venv/bin/python bench/strong_teacher.py                # 1,500 training inputs: about 12 min on 2 CPU cores
    .venv/bin/python bench/strong_teacher.py --inputs all   # every training row, as shipped: about 50 min
    .venv/bin/python bench/strong_teacher.py --run-dir runs/banking77_deepseek   # check a finished run

It runs `configs/banking77_deepseek.yaml` (DeepSeek-v4.1-flash's recorded answers as the teacher, no teacher
server, SmolLM2-135M student) through `distill run`, with `data.max_inputs` from `--inputs` and any `--set`
overrides, in `runs/bench_strong_teacher_<inputs>` (content-keyed, so a rerun reuses what is done). The base
model prompted like the teacher is not measured (`compare.prompt_baseline=false`): no goal reads it, and on all
3,080 test queries it takes about 4 minutes of the CPU.
The baseline is in the same run: the teacher's answers to the same test queries (all 3,080), so every goal is a
ratio or a paired difference, not an absolute time. Goals, from the recipe:
- every training row: agreement with the teacher >= 0.90, student accuracy >= 0.98 of the teacher's, verdict
  `distil` (only where the intervals allow it), student cost per query <= 1/20 of the teacher's as billed;
- 1,500 inputs: agreement >= 0.80, student accuracy >= 0.95 of the teacher's.
The last line is JSON: each goal's value, target and whether it is met, with the intervals behind them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "banking77_deepseek.yaml"
RECORDED = REPO.parent / "shared" / "data" / "banking77" / "teacher_deepseek_v4_1_flash.csv"
SMALL_RUN = 1500


def goals_for(metrics: dict, every_row: bool) -> dict[str, dict]:
    """Each goal as value, target, met: the bar for every training row, or the one for 1,500 inputs."""
    ratio = metrics["student"]["quality"] / metrics["teacher"]["quality"]
    goals = {
        "agreement": (metrics["agreement"], 0.90 if every_row else 0.80, ">="),
        "accuracy_ratio": (ratio, 0.98 if every_row else 0.95, ">="),
    }
    if every_row:
        goals["cost_ratio"] = (metrics["cost_ratio"], 1 / 20, "<=")
    table = {name: {"value": round(value, 4), "target": round(target, 4),
                    "met": value >= target if sense == ">=" else value <= target}
             for name, (value, target, sense) in goals.items()}
    if every_row:
        verdict = metrics["recommendation"]["verdict"]
        table["verdict"] = {"value": verdict, "target": "distil", "met": verdict == "distil"}
    return table


def summarise(run_dir: Path, seconds: float | None) -> dict:
    """The finished run's figures and goals; which goals apply follows from the inputs it was trained on."""
    from distill.layout import RunLayout

    layout = RunLayout(run_dir)
    metrics = json.loads(layout.compare.metrics.read_text())
    train = json.loads(layout.manifest("train").read_text())
    student, teacher = metrics["student"], metrics["teacher"]
    goals = goals_for(metrics, every_row=train["config"]["data"]["max_inputs"] is None)
    return {
        "run_dir": str(run_dir),
        "train_rows": train["counts"]["train_rows"],
        "train_seconds": round(train["seconds"], 1),
        "student_accuracy": round(student["quality"], 4), "student_accuracy_ci": student["quality_ci"],
        "teacher_accuracy": round(teacher["quality"], 4), "teacher_accuracy_ci": teacher["quality_ci"],
        "agreement_ci": metrics["agreement_ci"],
        "quality_diff": round(metrics["quality_diff"], 4), "quality_diff_ci": metrics["quality_diff_ci"],
        "cascade_student_share": metrics["cascade"]["student_share"] if metrics.get("cascade") else None,
        "student_cost_per_1k": student["cost_per_1k_queries"], "teacher_cost_per_1k": teacher["cost_per_1k_queries"],
        "goals": goals,
        "all_met": all(goal["met"] for goal in goals.values()),
        "seconds": None if seconds is None else round(seconds, 1),
    }


def run(inputs: int | None, overrides: list[str]) -> tuple[Path, float]:
    from distill.config import load_config
    from distill.layout import RunLayout
    from distill.pipeline import run_pipeline

    sets = [f"data.max_inputs={'null' if inputs is None else inputs}", "compare.prompt_baseline=false", *overrides]
    config = load_config(CONFIG, sets)
    run_dir = REPO / "runs" / f"bench_strong_teacher_{'all' if inputs is None else inputs}"
    started = time.perf_counter()
    run_pipeline(config, RunLayout(run_dir))
    return run_dir, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", default=str(SMALL_RUN), help="training inputs to label, or 'all'")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a config override")
    parser.add_argument("--run-dir", type=Path, help="check this finished run instead of running one")
    args = parser.parse_args()
    if args.run_dir is not None:
        print(json.dumps(summarise(args.run_dir, None)))
        return
    if not RECORDED.exists():
        sys.exit(f"{RECORDED} is missing: this benchmark needs ../shared/data beside the repository")
    run_dir, seconds = run(None if args.inputs == "all" else int(args.inputs), args.overrides)
    print(json.dumps(summarise(run_dir, seconds)))

if __name__ == "__main__":
    main()
