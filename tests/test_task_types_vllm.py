"""Every task type through the whole pipeline on a tiny real model: a real vLLM server decodes under the type's
constraint, peft trains on the answers, compare serves the adapter and scores with the type's metrics."""

import json
from pathlib import Path

import pytest

from distill.artifacts import read_rows
from distill.config import load_config
from distill.layout import RunLayout
from distill.pipeline import run_pipeline
from distill.tasks import make_task
from helpers import REPO, study_config, write_config, write_csv

pytestmark = pytest.mark.slow

BOOKINGS = [("Table for {n} on Friday at 7pm please, name Ann Lee", {"people": "{n}", "date": "Friday",
                                                                      "time": "7pm"}),
            ("Can I book for {n} people tomorrow?", {"people": "{n}", "date": "tomorrow"}),
            ("Thanks, see you then! ({n})", {})]
TAGS = [("My card was charged twice and the app crashes #{n}", "billing|technical_issue"),
        ("Where is my parcel {n}?", "shipping"), ("Refund order {n} and cancel my plan", "refund|cancellation")]


def _bookings(folder: Path) -> Path:
    """JSON Lines whose gold column holds JSON objects, as a new user writes extraction data."""
    rows = [{"text": text.format(n=n), "gold": {k: v.format(n=n) for k, v in slots.items()}}
            for n in range(2, 16) for text, slots in BOOKINGS]
    path = folder / "bookings.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _tags(folder: Path) -> Path:
    return write_csv(folder / "tags.csv", [{"text": t.format(n=n), "gold": g} for n in range(14) for t, g in TAGS])


def _task(kind: str, folder: Path) -> tuple[dict, Path, str]:
    """The task section, its input file, and the metric only that type reports."""
    if kind == "multi_label":
        task = {"type": "classification", "multi_label": True, "instruction": "Tag the support message.",
                "labels": ["billing", "technical_issue", "shipping", "refund", "cancellation"]}
        return task, _tags(folder), "micro_f1"
    if kind == "extraction":
        string = {"type": "string", "maxLength": 12}
        schema = {"type": "object", "additionalProperties": False,
                  "properties": {"people": string, "date": string, "time": string}}
        task = {"type": "extraction", "instruction": "Extract the booking.", "json_schema": schema}
        return task, _bookings(folder), "per_field"
    summary_task = load_config(REPO / "configs" / "call_summary.yaml").task.model_dump(mode="json")
    return summary_task, REPO / "configs" / "data" / "support_calls.csv", "rougeL"


@pytest.mark.parametrize("kind", ["multi_label", "extraction", "generation"])
def test_task_type_end_to_end(kind: str, tmp_path: Path, tiny_model: Path, served_tiny) -> None:
    task, inputs, own_metric = _task(kind, tmp_path)
    config = study_config(tiny_model, inputs, task=task)
    config["data"].update(gold_column="summary" if kind == "generation" else "gold", test_size=8, max_inputs=32)
    config["teacher"] = {"model": "tiny-teacher", "url": served_tiny.base_url, "max_tokens": 80, "concurrency": 8}
    config["filter"] = {"near_dup_threshold": None, "eval_fraction": 0.1}
    config["student"].update(max_tokens=80, max_seq_len=256, export_merged=False)
    config["compare"] = {"max_concurrency": 16, "prompt_baseline": False}
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    run_pipeline(loaded, RunLayout(tmp_path / "run"))

    task_type = make_task(loaded.task)
    outputs = read_rows(tmp_path / "run" / "generate" / "outputs.parquet")
    assert all(row["error"] is None for row in outputs), [r["raw"] for r in outputs if r["error"]][:3]
    assert all(task_type.parse(row["raw"]).value == row["label"] for row in outputs)
    assert read_rows(tmp_path / "run" / "filter" / "train.parquet")
    metrics = json.loads((tmp_path / "run" / "compare" / "metrics.json").read_text())
    assert metrics["task"]["type"] == task_type.name
    assert metrics["student"]["valid_rate"] == 1.0, "constrained decoding keeps every student answer valid"
    assert own_metric in metrics["student"] and 0 <= metrics["student"]["quality"] <= 1
    assert metrics["confusion"] is None and (metrics["mcnemar"] is None) == (kind == "generation")
    answers = read_rows(tmp_path / "run" / "compare" / "answers.parquet")
    assert all(task_type.parse(a["adapter"]).value == a["adapter"] for a in answers)
