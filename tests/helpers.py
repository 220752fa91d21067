"""What tests share: paths, the demo's labels and small builders of configs and data files."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the repository; DISTILL_SHARED_DATA points elsewhere (a worktree kept in another folder).
SHARED_DATA = Path(os.environ.get("DISTILL_SHARED_DATA", REPO.parent / "shared" / "data"))
DEMO_INPUTS = REPO / "configs" / "data" / "support_inbox.csv"
DEMO_LABELS = ["billing", "refund", "shipping", "account_access", "technical_issue", "cancellation",
               "product_question", "feedback"]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def study_config(model: str | Path, inputs: Path, **overrides: dict) -> dict:
    """A complete config dict for a small study; `overrides` replace whole sections."""
    server = {"max_model_len": 512, "cpu_kv_cache_gib": 1, "startup_timeout_s": 600}
    config = {
        "name": "tiny",
        "task": {"type": "classification", "instruction": "Route the support message.",
                 "labels": DEMO_LABELS, "student_prompt": "Message: {text}\nCategory:"},
        "data": {"inputs": str(inputs), "text_column": "text", "gold_column": "category", "test_size": 12,
                 "max_inputs": 40},
        "teacher": {"model": str(model), "concurrency": 8, "max_tokens": 8, "server": server},
        "filter": {"eval_fraction": 0.1},
        "student": {"model": str(model), "lora": {"r": 8, "alpha": 16}, "epochs": 1, "batch_size": 8,
                    "max_seq_len": 96, "server": server},
        "compare": {"max_concurrency": 16},
        "cost": {"teacher_price_per_hour": 2.0, "teacher_gpus": 1, "student_price_per_hour": 1.0,
                 "train_price_per_hour": 1.0},
    }
    config.update(overrides)
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def finished_filter(run_dir: Path, train_rows: list[dict], eval_rows: list[dict]) -> None:
    """A finished filter stage, as train's chain check reads it: its splits, and a manifest naming them."""
    from distill.artifacts import sha256_file, write_json, write_rows

    folder = run_dir / "filter"
    write_rows(folder / "train.parquet", train_rows)
    write_rows(folder / "eval.parquet", eval_rows)
    outputs = {name: sha256_file(folder / name) for name in ("train.parquet", "eval.parquet")}
    write_json(folder / "manifest.json", {"stage": "filter", "outputs": outputs, "counts": {}})


def split_train_eval(kept: list[dict], fraction: float, seed: int) -> tuple[list, list]:
    """The filter's split for rows held in memory (the reference its external sort must match): (train, eval),
    eval the first `fraction` of the seeded order."""
    from distill.filter.order import order_key

    order = sorted(kept, key=lambda row: order_key(seed, row["id"]))
    n_eval = round(len(order) * fraction)
    return order[n_eval:], order[:n_eval]


def drop_reasons(rows: list[dict], config, test_texts: list[str]) -> list[str | None]:
    """Every row's drop reason (None: kept) for rows held in memory: the filter's screen on one batch, then the
    label cap (the reference the streamed stage must match)."""
    import tempfile
    from contextlib import closing

    from distill.filter.screen import LabelCaps, Screen

    with tempfile.TemporaryDirectory() as scratch, closing(Screen(config, test_texts, Path(scratch))) as screen:
        reasons, _ = screen(rows)
        if screen.caps is not None:
            LabelCaps.apply(reasons, 0, screen.caps.kept())
    return reasons
