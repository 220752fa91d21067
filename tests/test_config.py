from pathlib import Path

import pytest

from distill.config import load_config
from distill.data.inputs import split_inputs
from distill.errors import UserError
from helpers import DEMO_INPUTS, REPO, study_config, write_config


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    if "shared/data" in path.read_text() and not (REPO.parent / "shared" / "data").exists():
        pytest.skip("../shared/data is absent")
    config = load_config(path)
    splits = split_inputs(config)  # reads every input and checks each gold answer against the task
    assert splits.to_label and splits.test
    if config.data.gold_column:
        assert all(example.gold is not None for example in splits.test)


def test_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    inputs = tmp_path / "sub" / "rows.csv"
    inputs.write_text("text,category\nhello,billing\n")
    path = write_config(tmp_path / "sub" / "study.yaml", study_config("m", Path("rows.csv")))
    assert load_config(path).data.inputs == inputs.resolve()


def _error_for(tmp_path: Path, config: dict) -> str:
    with pytest.raises(UserError) as caught:
        load_config(write_config(tmp_path / "bad.yaml", config))
    return str(caught.value)


def test_unknown_key_is_named_with_its_path(tmp_path: Path) -> None:
    config = study_config("m", DEMO_INPUTS)
    config["student"]["lora"]["rank"] = 8
    message = _error_for(tmp_path, config)
    assert "bad.yaml: student.lora.rank: unknown key" in message


def test_bad_type_is_named_with_its_path(tmp_path: Path) -> None:
    config = study_config("m", DEMO_INPUTS)
    config["teacher"]["concurrency"] = "many"
    assert "teacher.concurrency: Input should be a valid integer" in _error_for(tmp_path, config)


def test_missing_file_names_key_and_file(tmp_path: Path) -> None:
    message = _error_for(tmp_path, study_config("m", tmp_path / "nowhere.csv"))
    assert "data.inputs: file not found:" in message and "nowhere.csv" in message


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    config = study_config("m", tmp_path / "nowhere.csv")
    config["teacher"]["concurrency"] = 0
    del config["cost"]["teacher_price_per_hour"]
    lines = _error_for(tmp_path, config).splitlines()
    assert len(lines) == 3
    assert {line.split(": ")[1] for line in lines} == {"data.inputs", "teacher.concurrency",
                                                       "cost.teacher_price_per_hour"}


def test_student_prompt_needs_text_slot(tmp_path: Path) -> None:
    config = study_config("m", DEMO_INPUTS)
    config["task"]["student_prompt"] = "Category:"
    assert "task.student_prompt: must contain the placeholder {text}" in _error_for(tmp_path, config)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="broken.yaml: not valid YAML"):
        load_config(path)


def test_labels_file_must_be_a_list_of_strings(tmp_path: Path) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text('{"a": 1}')
    task = {"instruction": "x", "labels_file": str(labels)}
    with pytest.raises(UserError, match="labels.json: task.labels_file must hold a JSON list"):
        load_config(write_config(tmp_path / "c.yaml", study_config("m", DEMO_INPUTS, task=task)))


def test_student_prompt_with_stray_braces_is_refused(tmp_path: Path) -> None:
    config = study_config("m", DEMO_INPUTS)
    config["task"]["student_prompt"] = 'Reply as {"label": ...}\n{text}\nJSON:'
    message = _error_for(tmp_path, config)
    assert "task.student_prompt: braces other than {text} (KeyError:" in message
    assert "write a literal brace as {{ or }}" in message
    config["task"]["student_prompt"] = 'Reply as {{"label": ...}}\n{text}\nJSON:'
    assert load_config(write_config(tmp_path / "ok.yaml", config)).task.student_prompt.startswith("Reply as {{")


@pytest.mark.parametrize(("task", "kind"), [
    ({"type": "extraction", "instruction": "x", "json_schema": {"type": "object", "properties": {"a": {}}}},
     "extraction task"),
    ({"type": "classification", "instruction": "x", "labels": ["a", "b"], "multi_label": True},
     "classification (multi_label) task"),
])
def test_distillation_is_refused_beyond_single_label_classification(tmp_path: Path, task: dict, kind: str) -> None:
    config = study_config("m", DEMO_INPUTS, task=task)
    config["student"]["distill_weight"] = 0.5
    assert (f"student.distill_weight: the teacher's first-token probabilities are mapped to labels, so distillation "
            f"applies to single-label classification only, not to this {kind}; set distill_weight: 0"
            in _error_for(tmp_path, config))


def test_dora_needs_the_merged_student(tmp_path: Path) -> None:
    config = study_config("m", DEMO_INPUTS)
    config["student"]["lora"]["use_dora"] = True
    config["compare"]["student_serving"] = "adapter"
    message = _error_for(tmp_path, config)
    assert "student.lora.use_dora" in message and "compare.student_serving: merged" in message
    config["compare"]["student_serving"] = "merged"
    assert load_config(write_config(tmp_path / "ok.yaml", config)).student.lora.use_dora
