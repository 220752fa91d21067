"""`distill init DATA_FILE`: a config that `distill validate` accepts, with the columns, task type and labels (or
JSON schema) read off the data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from distill.cli import app
from distill.data.scaffold import infer_schema
from helpers import DEMO_INPUTS, DEMO_LABELS, SHARED_DATA


def _init_and_validate(tmp_path: Path, data: Path, *options: str) -> dict:
    out = tmp_path / "study.yaml"
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(data), "-o", str(out), *options])
    assert result.exit_code == 0, result.output
    checked = runner.invoke(app, ["validate", "-c", str(out)])
    assert checked.exit_code == 0, checked.output
    text = out.read_text()
    assert text.startswith("# Written by `distill init"), "annotated for a person to check"
    return yaml.safe_load(text)


def test_the_demo_inbox_becomes_a_classification_study(tmp_path: Path) -> None:
    config = _init_and_validate(tmp_path, DEMO_INPUTS)
    assert config["task"]["type"] == "classification"
    assert sorted(config["task"]["labels"]) == sorted(DEMO_LABELS)
    assert (config["data"]["text_column"], config["data"]["gold_column"]) == ("text", "category")
    assert config["teacher"]["model"] == "qwen2.5-coder-1.5b-instruct", "runs on the built-in models"


@pytest.mark.skipif(not (SHARED_DATA / "banking77").is_dir(), reason="../shared/data not present")
def test_banking77_sorted_by_label_still_shows_all_77_labels(tmp_path: Path) -> None:
    config = _init_and_validate(tmp_path, SHARED_DATA / "banking77" / "train.csv")
    assert len(config["task"]["labels"]) == 77


def test_json_object_gold_becomes_an_extraction_schema(tmp_path: Path) -> None:
    data = tmp_path / "bookings.jsonl"
    rows = [{"message": "Table for 4 at 7pm please", "slots": {"people": 4, "time": "7pm"}},
            {"message": "Just 2 of us", "slots": {"people": 2}}, {"message": "hi", "slots": {}}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = _init_and_validate(tmp_path, data)
    assert config["task"]["type"] == "extraction"
    assert config["task"]["json_schema"]["properties"] == {"people": {"type": ["integer", "null"]},
                                                          "time": {"type": ["string", "null"]}}
    assert config["data"]["text_column"] == "message" and config["data"]["gold_column"] == "slots"


def test_no_gold_asks_for_labels(tmp_path: Path) -> None:
    data = tmp_path / "inbox.csv"
    data.write_text("body\n" + "".join(f"message number {i}\n" for i in range(20)))
    result = CliRunner().invoke(app, ["init", str(data), "-o", str(tmp_path / "x.yaml")])
    assert result.exit_code == 1 and "--labels" in result.output
    config = _init_and_validate(tmp_path, data, "--labels", "spam, ham")
    assert config["task"]["labels"] == ["spam", "ham"] and "gold_column" not in config["data"]


def test_an_existing_config_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "study.yaml"
    out.write_text("mine")
    result = CliRunner().invoke(app, ["init", str(DEMO_INPUTS), "-o", str(out)])
    assert result.exit_code == 1 and out.read_text() == "mine"


def test_schema_allows_mixed_types_and_absence() -> None:
    schema = infer_schema([{"n": 1}, {"n": 1.5}, {"n": None, "tags": ["a"]}])
    assert schema["properties"] == {"n": {"type": ["integer", "number", "null"]}, "tags": {"type": ["array", "null"]}}


@pytest.mark.skipif(not (SHARED_DATA / "restaurant8k").is_dir(), reason="../shared/data not present")
def test_extraction_gold_found_in_its_inputs_turns_grounding_on(tmp_path: Path) -> None:
    from distill.data.readers import restaurant8k

    data = tmp_path / "bookings.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in restaurant8k(SHARED_DATA / "restaurant8k" / "test.json")))
    config = _init_and_validate(tmp_path, data)
    assert config["filter"] == {"grounding": True, "ungrounded_fields": []}
    assert "# - grounding: the gold values occur in their inputs" in (tmp_path / "study.yaml").read_text()


def test_normalised_gold_fields_are_listed_as_exempt(tmp_path: Path) -> None:
    data = tmp_path / "bookings.jsonl"
    rows = [{"message": f"Table for {n} next Friday, name Ruiz", "slots": {"people": str(n), "date": "2026-05-01",
                                                                          "name": "Ruiz"}} for n in range(2, 12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = _init_and_validate(tmp_path, data)
    assert config["filter"] == {"grounding": True, "ungrounded_fields": ["date"]}
    assert "date (10 of 10)" in (tmp_path / "study.yaml").read_text()
