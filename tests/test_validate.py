"""`distill validate` reads every data file the way the stages will, without a model, and reports every problem
at once: exit 1 naming file, row and column."""

import time
from pathlib import Path

from typer.testing import CliRunner

from distill.cli import app
from helpers import DEMO_INPUTS, study_config, write_config, write_csv

runner = CliRunner()


def _validate(config: Path):
    return runner.invoke(app, ["validate", "-c", str(config)])


def test_a_malformed_data_file_exits_1_naming_file_row_and_column(tmp_path: Path) -> None:
    inputs = write_csv(tmp_path / "inbox.csv", [{"text": "where is my parcel", "category": "shipping"},
                                                {"text": "", "category": "billing"},
                                                {"text": "charged twice", "category": "biling"}])
    test = tmp_path / "test.jsonl"
    test.write_text('{"text": "refund please", "category": "refund"}\n{"text": "oops", category}\n')
    config = study_config("smollm2-135m-instruct", inputs)  # a catalogue name: checked, never loaded
    del config["data"]["test_size"]
    config["data"]["test"] = str(test)
    result = _validate(write_config(tmp_path / "c.yaml", config))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"error: 3 problem(s) in {tmp_path / 'c.yaml'} and its data:"
    assert lines[1] == f"{inputs}: row 2 (line 3), column 'text': empty or missing text; fix or remove that row"
    assert lines[2].startswith(f"{inputs}: row 3 (line 4), column 'category': gold answer 'biling' is not valid "
                               "for the task: not in the label set")
    assert lines[3] == (f"{test}: line 2, column 18: not valid JSON (Expecting property name enclosed in double "
                        "quotes)")
    assert "Traceback" not in result.output


def test_row_counts_overlap_and_prompt_templates_are_checked(tmp_path: Path) -> None:
    test = write_csv(tmp_path / "test.csv", [{"text": "I want my money back", "category": "refund"},
                                             {"text": "Where is my parcel?", "category": "shipping"}])
    inputs = write_csv(tmp_path / "in.csv", [{"text": "where is my  PARCEL?", "category": "shipping"},
                                             {"text": "my card was charged twice", "category": "billing"}])
    config = study_config("smollm2-135m-instruct", inputs)
    del config["data"]["test_size"]
    config["data"].update(test=str(test), max_test=3)
    result = _validate(write_config(tmp_path / "c.yaml", config))
    assert result.exit_code == 1
    assert f"data.max_test=3, but {test} has 2 rows: lower data.max_test" in result.stderr
    assert (f"note: {inputs}: 1 row(s) repeat a test query (first: row 1); filter drops them as leaks_test"
            in result.stderr)

    config["data"]["max_test"] = 2
    result = _validate(write_config(tmp_path / "c.yaml", config))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{tmp_path / 'c.yaml'}: valid (in.csv: 2 rows; test.csv: 2 rows)"

    config["task"]["student_prompt"] = 'Message: {text}\nAnswer as {"category": ...}:'
    result = _validate(write_config(tmp_path / "c.yaml", config))
    assert result.exit_code == 1 and "task.student_prompt: braces other than {text}" in result.stderr


def test_validate_reads_the_demo_data_in_seconds(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", study_config("smollm2-135m-instruct", DEMO_INPUTS))
    start = time.perf_counter()
    result = _validate(config)
    assert result.exit_code == 0, result.output
    assert "support_inbox.csv: 176 rows" in result.stdout
    assert time.perf_counter() - start < 10


def test_a_url_teacher_priced_per_hour_without_its_fleet_size_is_refused(tmp_path: Path) -> None:
    config = study_config("smollm2-135m-instruct", DEMO_INPUTS)
    config["teacher"] = {"model": "big-70b", "url": ["http://gpu1:8000/v1", "http://gpu2:8000/v1"]}
    config["cost"] = {"teacher_price_per_hour": 2.5, "student_price_per_hour": 1.0, "train_price_per_hour": 1.0}
    result = _validate(write_config(tmp_path / "c.yaml", config))
    assert result.exit_code == 1
    assert "cost.teacher_gpus" in result.stderr and "Traceback" not in result.output
    config["cost"]["teacher_gpus"] = 16
    assert _validate(write_config(tmp_path / "c.yaml", config)).exit_code == 0
    del config["cost"]["teacher_gpus"]  # an API teacher priced per token has no fleet to count
    config["cost"] |= {"teacher_input_per_1m": 1.0, "teacher_output_per_1m": 2.0}
    assert _validate(write_config(tmp_path / "c.yaml", config)).exit_code == 0
