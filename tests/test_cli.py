import dataclasses
from pathlib import Path

from typer.testing import CliRunner

from distill import pipeline
from distill.cli import app
from helpers import DEMO_INPUTS, REPO, study_config, write_config

runner = CliRunner()


def test_validate_accepts_the_demo_config() -> None:
    result = runner.invoke(app, ["validate", "-c", str(REPO / "configs" / "demo.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_user_error_is_one_line_exit_1_without_traceback(tmp_path: Path) -> None:
    config = study_config("m", DEMO_INPUTS)
    config["teacher"]["temprature"] = 0.5
    result = runner.invoke(app, ["validate", "-c", str(write_config(tmp_path / "bad.yaml", config))])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'bad.yaml'}: teacher.temprature: "
                                                  "unknown key; did you mean teacher.temperature?"]
    assert "Traceback" not in result.output


def test_missing_config_file_is_a_user_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["filter", "-c", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "nope.yaml: config file not found" in result.stderr


def test_stage_before_its_input_exists_says_what_to_run(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", study_config("m", DEMO_INPUTS))
    result = runner.invoke(app, ["train", "-c", str(config), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "run `distill filter` first" in result.stderr


def test_internal_error_exits_2(tmp_path: Path, monkeypatch) -> None:
    def broken(*_args):
        raise RuntimeError("boom")

    stage = pipeline.get_stage("generate")
    monkeypatch.setitem(pipeline.stage_registry(), "generate", dataclasses.replace(stage, run=broken))
    config = write_config(tmp_path / "c.yaml", study_config("m", DEMO_INPUTS))
    result = runner.invoke(app, ["generate", "-c", str(config), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "internal error: RuntimeError: boom" in result.stderr


def test_models_list_names_the_catalogue() -> None:
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    assert "smollm2-135m-instruct" in result.output and "qwen2.5-coder-1.5b-instruct" in result.output
