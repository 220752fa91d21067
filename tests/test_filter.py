from pathlib import Path

import pytest

from conftest import study_config, write_config, write_csv
from distill.artifacts import read_rows, write_json, write_rows
from distill.config import load_config
from distill.errors import UserError
from distill.filter import filter_stage


def _generate_output(run_dir: Path, rows: list[dict]) -> None:
    write_rows(run_dir / "generate" / "outputs.parquet", rows)
    write_json(run_dir / "generate" / "manifest.json", {"stage": "generate"})


def _row(i: int, text: str, label: str | None, error: str | None = None) -> dict:
    return {"id": f"inputs:{i}", "text": text, "gold": None, "raw": label, "label": label, "error": error,
            "logprob": -0.1, "top_logprobs": "[]", "prompt_tokens": 10, "completion_tokens": 2,
            "latency_ms": 5.0}


def test_filter_drops_invalid_duplicates_and_test_leaks(tmp_path: Path) -> None:
    inputs = write_csv(tmp_path / "in.csv", [
        {"text": "held out test message", "category": "billing"},
        *[{"text": f"message {i}", "category": "billing"} for i in range(6)],
    ])
    config = study_config("m", inputs)
    config["data"] = {"inputs": str(inputs), "test_size": 1, "seed": 0}
    config["filter"] = {"eval_fraction": 0.25}
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    from distill.data import split_inputs

    test_text = split_inputs(loaded).test[0].text
    _generate_output(tmp_path, [
        _row(0, "Reset my password", "account_access"),
        _row(1, "reset   my PASSWORD ", "account_access"),  # duplicate after normalising
        _row(2, "Where is my parcel?", None, "not in the label set: 'parcel'"),
        _row(3, test_text.upper(), "billing"),  # leaks the held-out test set
        _row(4, "Refund me", "refund"),
        _row(5, "Cancel my plan", "cancellation"),
        _row(6, "Invoice is wrong", "billing"),
    ])
    manifest = filter_stage(loaded, tmp_path)
    dropped = {r["id"]: r["drop_reason"] for r in read_rows(tmp_path / "filter" / "dropped.parquet")}
    assert dropped == {"inputs:1": "duplicate", "inputs:2": "invalid", "inputs:3": "leaks_test"}
    train = read_rows(tmp_path / "filter" / "train.parquet")
    evaluation = read_rows(tmp_path / "filter" / "eval.parquet")
    kept = {r["id"] for r in train} | {r["id"] for r in evaluation}
    assert kept == {"inputs:0", "inputs:4", "inputs:5", "inputs:6"}
    assert len(evaluation) == 1
    assert manifest["counts"] == {"rows_in": 7, "rows_kept": 4, "train": 3, "eval": 1}
    assert (tmp_path / "filter" / "manifest.json").exists()
    assert "| duplicate | 1 |" in (tmp_path / "filter" / "report.md").read_text()


def test_filter_refuses_output_missing_columns(tmp_path: Path) -> None:
    inputs = write_csv(tmp_path / "in.csv", [{"text": f"m{i}", "category": "a"} for i in range(20)])
    loaded = load_config(write_config(tmp_path / "c.yaml", study_config("m", inputs)))
    write_rows(tmp_path / "generate" / "outputs.parquet", [{"id": "inputs:0", "text": "x"}])
    write_json(tmp_path / "generate" / "manifest.json", {"stage": "generate"})
    with pytest.raises(UserError, match=r"outputs.parquet: missing columns \['label', 'error'\]"):
        filter_stage(loaded, tmp_path)


def test_filter_needs_a_finished_generate_stage(tmp_path: Path) -> None:
    inputs = write_csv(tmp_path / "in.csv", [{"text": f"m{i}", "category": "a"} for i in range(20)])
    loaded = load_config(write_config(tmp_path / "c.yaml", study_config("m", inputs)))
    with pytest.raises(UserError, match="run `distill generate` first"):
        filter_stage(loaded, tmp_path)
