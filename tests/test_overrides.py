"""`--set section.key=value`: typed by the config's own schema, typos named with the nearest key, and the result
is the effective config that manifests record and keys hash."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.cli import app
from distill.config import load_config
from distill.errors import UserError
from distill.pipeline import get_stage
from distill.stages import config_key
from helpers import DEMO_INPUTS, REPO, study_config, write_config

DEMO = REPO / "configs" / "demo.yaml"


def test_values_take_the_fields_types() -> None:
    config = load_config(DEMO, ["student.epochs=1", "student.lora.r=8", "student.learning_rate=1e-4",
                                "teacher.server.enable_prefix_caching=false", "name=007"])
    assert config.student.epochs == 1.0 and isinstance(config.student.epochs, float)
    assert config.student.lora.r == 8
    assert config.student.learning_rate == pytest.approx(1e-4)
    assert config.teacher.server.enable_prefix_caching is False
    assert config.name == "007", "a text field keeps the text as typed, not YAML's number"


def test_lists_task_keys_and_variants(tmp_path: Path) -> None:
    config = load_config(DEMO, ["task.labels=[spam, ham]", "student.lora.target_modules=[q_proj, v_proj]",
                                "variants.r4.lora.r=4"])
    assert config.task.labels == ["spam", "ham"]
    assert config.student.lora.target_modules == ["q_proj", "v_proj"]
    assert config.variant("r4").student.lora.r == 4


def test_a_relative_path_is_taken_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.chdir(DEMO_INPUTS.parent)
    config = load_config(DEMO, [f"data.inputs={DEMO_INPUTS.name}"])
    assert config.data.inputs == DEMO_INPUTS


@pytest.mark.parametrize(("assignment", "message"), [
    ("student.epoch=1", "unknown key 'student.epoch'; did you mean student.epochs?"),
    ("studnt.epochs=1", "unknown key 'studnt'; did you mean student?"),
    ("task.label=[a, b]", "did you mean task.labels?"),
    ("student.lora.zzz=4", "the keys here are r, alpha"),
    ("student.epochs", "write it as section.key=value"),
    ("student.epochs.x=1", "student.epochs is a value, not a section"),
])
def test_a_wrong_key_is_named_with_the_nearest_valid_one(assignment: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("?", r"\?").replace("[", r"\[")):
        load_config(DEMO, [assignment])


def test_a_wrong_value_is_reported_by_the_schema_as_given_with_set() -> None:
    with pytest.raises(UserError, match=r"student.epochs: .*number.*\(given with --set\)"):
        load_config(DEMO, ["student.epochs=lots"])
    with pytest.raises(UserError, match="vLLM serves LoRA ranks up to 512"):
        load_config(DEMO, ["student.lora.r=1024"])


def test_the_keys_hash_the_effective_config(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", study_config("m", DEMO_INPUTS))
    train = get_stage("train")
    plain, overridden = load_config(path), load_config(path, ["student.epochs=3"])
    assert config_key(train, plain) != config_key(train, overridden)
    assert config_key(get_stage("generate"), plain) == config_key(get_stage("generate"), overridden)
    assert overridden.model_dump(mode="json")["student"]["epochs"] == 3.0  # what StageRecorder records


def test_every_stage_command_takes_set() -> None:
    runner = CliRunner()
    for command in ("generate", "filter", "train", "compare", "run", "study"):
        result = runner.invoke(app, [command, "-c", str(DEMO), "--set", "student.epoch=1"])
        assert result.exit_code == 1, (command, result.output)
        assert "did you mean student.epochs?" in result.output, command
