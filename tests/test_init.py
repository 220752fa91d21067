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


def test_151_labels_that_repeat_are_still_classification(tmp_path: Path) -> None:
    data = tmp_path / "intents.csv"
    labels = [f"intent_{i:03d}" for i in range(151)]
    data.write_text("text,intent\n" + "".join(f"please help with thing {i} number {n},{label}\n"
                                              for i, label in enumerate(labels) for n in range(4)))
    config = _init_and_validate(tmp_path, data)
    assert config["task"]["type"] == "classification" and sorted(config["task"]["labels"]) == labels
    assert "intent_000" not in config["task"]["instruction"], "the task lists the labels; the instruction does not"


def test_the_label_list_is_sent_once(tmp_path: Path) -> None:
    from distill.config import load_config
    from distill.tasks import make_task

    _init_and_validate(tmp_path, DEMO_INPUTS)
    prompt = make_task(load_config(tmp_path / "study.yaml").task).system_prompt()
    assert all(prompt.count(label) == 1 for label in DEMO_LABELS), prompt


def test_a_few_bad_extraction_gold_rows_are_reported_not_obeyed(tmp_path: Path) -> None:
    data = tmp_path / "bookings.csv"
    rows = [(f"table for {n} at {n + 5}pm", json.dumps({"people": n, "time": f"{n + 5}pm"})) for n in range(1, 39)]
    rows[6] = ("table for seven", "{people: 7")  # malformed, as hand-written gold often is
    rows[20] = ("no idea", "n/a")
    data.write_text("text,slots\n" + "".join(f'{t},"{g.replace(chr(34), chr(34) * 2)}"\n' for t, g in rows))
    out = tmp_path / "study.yaml"
    result = CliRunner().invoke(app, ["init", str(data), "-o", str(out)])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(out.read_text())
    assert config["task"]["type"] == "extraction"
    assert set(config["task"]["json_schema"]["properties"]) == {"people", "time"}
    assert "2 gold value(s) are not JSON objects (row 7 (line 8), row 21 (line 22))" in result.output


def test_type_can_be_chosen(tmp_path: Path) -> None:
    config = _init_and_validate(tmp_path, DEMO_INPUTS, "--type", "generation")
    assert config["task"]["type"] == "generation"
    result = CliRunner().invoke(app, ["init", str(DEMO_INPUTS), "-o", str(tmp_path / "x.yaml"), "--type", "sorting"])
    assert result.exit_code == 1 and "choose one of classification, extraction, generation" in result.output


def test_generation_instruction_says_what_to_write_and_max_seq_len_fits_the_data(tmp_path: Path) -> None:
    data = tmp_path / "dialogues.jsonl"
    rows = [{"dialogue": " ".join(["word"] * (20 + 40 * i)), "summary": f"person {i} asks about a refund today"}
            for i in range(12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = _init_and_validate(tmp_path, data)
    assert config["task"]["instruction"] == "Read the text and write its summary, in about 7 words."
    assert "example" not in config["task"]["instruction"]
    assert 460 <= config["student"]["max_seq_len"] <= 640, "the longest dialogue (460 words) and its summary fit"


def test_validate_warns_where_inputs_would_be_cut(tmp_path: Path) -> None:
    data = tmp_path / "long.csv"
    data.write_text("text,category\n" + "".join(f"{' '.join(['word'] * (10 + 30 * i))},{'ab'[i % 2]}\n"
                                                 for i in range(10)))
    _init_and_validate(tmp_path, data)
    config = yaml.safe_load((tmp_path / "study.yaml").read_text())
    config["student"]["max_seq_len"] = 64
    config["data"]["inputs"] = str(data)
    (tmp_path / "cut.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["validate", "-c", str(tmp_path / "cut.yaml")])
    assert result.exit_code == 0, result.output
    assert "rows are longer than student.max_seq_len=64" in result.output and "training cuts" in result.output


def test_init_fetches_no_model_to_count_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "empty-cache"))  # the student is not pulled here
    config = _init_and_validate(tmp_path, DEMO_INPUTS)
    assert "max_seq_len" not in config["student"] and not (tmp_path / "empty-cache").exists()
