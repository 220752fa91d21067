from pathlib import Path

import pytest

from distill.config import load_config
from distill.data.inputs import load_examples, split_inputs
from distill.errors import UserError
from helpers import DEMO_INPUTS, SHARED_DATA, study_config, write_config, write_csv


def _config(tmp_path: Path, inputs: Path, **data: object):
    config = study_config("m", inputs)
    config["data"].update(data)
    return load_config(write_config(tmp_path / "c.yaml", config))


def test_missing_text_column_names_file_and_columns(tmp_path: Path) -> None:
    inputs = write_csv(tmp_path / "in.csv", [{"body": "hi", "category": "billing"}])
    config = _config(tmp_path, inputs)
    with pytest.raises(UserError, match=r"in.csv: no column 'text' \(data.text_column\).*\['body', 'category'\]"):
        load_examples(inputs, config.data, "inputs")


def test_empty_row_is_named(tmp_path: Path) -> None:
    inputs = write_csv(tmp_path / "in.csv", [{"text": "fine", "category": "a"}, {"text": "  ", "category": "b"}])
    config = _config(tmp_path, inputs)
    with pytest.raises(UserError, match="in.csv: row 2: empty or missing 'text'"):
        load_examples(inputs, config.data, "inputs")


def test_non_utf8_file_is_refused_by_name(tmp_path: Path) -> None:
    inputs = tmp_path / "latin1.csv"
    inputs.write_bytes("text,category\ncaf\xe9 au lait,billing\n".encode("latin-1"))
    config = _config(tmp_path, inputs)
    with pytest.raises(UserError, match="latin1.csv: not UTF-8"):
        load_examples(inputs, config.data, "inputs")


def test_jsonl_bad_line_is_named(tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "ok", "category": "a"}\n{oops\n')
    config = _config(tmp_path, inputs)
    with pytest.raises(UserError, match="in.jsonl: line 2: not valid JSON"):
        load_examples(inputs, config.data, "inputs")


def test_split_is_deterministic_disjoint_and_complete(tmp_path: Path) -> None:
    config = _config(tmp_path, DEMO_INPUTS, max_inputs=None, test_size=30)
    first, second = split_inputs(config), split_inputs(config)
    assert first == second
    label_ids = {e.id for e in first.to_label}
    test_ids = {e.id for e in first.test}
    assert len(test_ids) == 30 and not label_ids & test_ids
    assert len(label_ids | test_ids) == len(load_examples(DEMO_INPUTS, config.data, "inputs"))


def test_truncation_happens_after_shuffling(tmp_path: Path) -> None:
    """BANKING77's train.csv is sorted by label: the first rows alone would cover only a few labels."""
    if not (SHARED_DATA / "banking77").exists():
        pytest.skip("../shared/data is absent")
    config = study_config("m", SHARED_DATA / "banking77" / "train.csv",
                          task={"instruction": "x", "labels_file": str(SHARED_DATA / "banking77" / "categories.json")})
    config["data"].update(max_inputs=300, test_size=50)
    config = load_config(write_config(tmp_path / "c.yaml", config))
    labels = {e.gold for e in split_inputs(config).to_label}
    assert len(labels) > 60
