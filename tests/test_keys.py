"""Stage keys cover what a stage reads, by content: moving a project keeps it complete, editing a side file in
place makes the stages that read it stale."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from distill.cli import app
from distill.config import load_config
from distill.filter.stage import filter_stage
from distill.layout import RunLayout
from fake_openai import FakeEndpoint
from helpers import DEMO_INPUTS, DEMO_LABELS, study_config, write_config
from teacher.generate import generate


def _project(folder: Path, url: str, labels_file: bool = False) -> Path:
    """A project folder whose config names its data and labels by relative paths, as users write them."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEMO_INPUTS, folder / "inbox.csv")
    config = study_config("fake-model", Path("inbox.csv"))
    config["teacher"] = {"model": "fake-model", "url": url, "concurrency": 4}
    if labels_file:
        (folder / "labels.json").write_text(json.dumps(DEMO_LABELS))
        config["task"] = {k: v for k, v in config["task"].items() if k != "labels"} | {"labels_file": "labels.json"}
    return write_config(folder / "distill.yaml", config)


def _states(run_dir: Path, config: Path) -> dict[str, str]:
    result = CliRunner().invoke(app, ["status", str(run_dir), "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["stages"]


def _label_and_filter(config_path: Path, run_dir: Path) -> None:
    config = load_config(config_path)
    generate(config, RunLayout(run_dir))
    filter_stage(config, RunLayout(run_dir))


def test_a_copied_project_is_still_complete(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        config = _project(tmp_path / "a", fake.url)
        _label_and_filter(config, tmp_path / "a" / "run")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    states = _states(tmp_path / "b" / "run", tmp_path / "b" / "distill.yaml")
    assert states == {"generate": "complete", "filter": "complete", "train": "missing", "compare": "missing"}


def test_labels_moved_to_a_file_keep_the_key_and_a_renamed_label_makes_generate_stale(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        inline = _project(tmp_path, fake.url)
        _label_and_filter(inline, tmp_path / "run")
        in_file = _project(tmp_path, fake.url, labels_file=True)  # same labels, now in labels.json
    assert _states(tmp_path / "run", in_file)["generate"] == "complete"

    renamed = [("billing_question" if label == "billing" else label) for label in DEMO_LABELS]
    (tmp_path / "labels.json").write_text(json.dumps(renamed))  # edited in place: the config is unchanged
    states = _states(tmp_path / "run", in_file)
    assert states["generate"] == "stale" and states["filter"] == "stale"


def test_an_input_file_edited_in_place_makes_generate_stale(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        config = _project(tmp_path, fake.url)
        _label_and_filter(config, tmp_path / "run")
    with open(tmp_path / "inbox.csv", "a", encoding="utf-8") as handle:
        handle.write("My parcel never arrived,shipping\n")
    assert _states(tmp_path / "run", config)["generate"] == "stale"


def test_a_setting_only_compare_reads_leaves_the_stages_before_it_complete(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        config = _project(tmp_path, fake.url)
        _label_and_filter(config, tmp_path / "run")
    raw = yaml.safe_load(config.read_text())
    raw["compare"]["max_concurrency"] = 2  # read by compare only
    write_config(config, raw)
    states = _states(tmp_path / "run", config)
    assert states["generate"] == "complete" and states["filter"] == "complete"


def test_a_new_test_split_makes_filter_and_compare_stale(tmp_path: Path) -> None:
    """Both read the test split: filter for its leak check, compare to measure on it."""
    from distill.artifacts import write_json
    from distill.pipeline import get_stage
    from distill.stages import stage_key

    with FakeEndpoint() as fake:
        config = _project(tmp_path, fake.url)
        _label_and_filter(config, tmp_path / "run")
        layout = RunLayout(tmp_path / "run")
        loaded = load_config(config)
        for name in ("train", "compare"):  # finished as far as their keys go
            write_json(layout.manifest(name), {"stage": name, "key": stage_key(get_stage(name), loaded, layout),
                                               "outputs": {}, "seconds": 1.0, "timings": {},
                                               "config": loaded.model_dump(mode="json")})
        assert _states(layout.root, config)["compare"] == "complete"
        raw = yaml.safe_load(config.read_text())
        raw["data"]["max_test"] = 6  # fewer test queries; the rows to label are the same
        write_config(config, raw)
        generate(load_config(config), layout)
    states = _states(layout.root, config)
    # Train reads filter's outputs, which only a rerun of filter can change.
    assert states == {"generate": "complete", "filter": "stale", "train": "complete", "compare": "stale"}



def test_a_variant_with_the_main_students_settings_has_its_keys(tmp_path: Path) -> None:
    """A variant's student goes through a dump and a validation: the same settings must not train again, even
    where the config leaves a number to a default written as an int (startup_timeout_s: 900)."""
    from distill.pipeline import get_stage
    from distill.stages import config_key

    config = study_config("m", DEMO_INPUTS, variants={"same": {"epochs": 1}, "r4": {"lora": {"r": 4}}})
    for section in ("teacher", "student"):
        config[section]["server"] = {k: v for k, v in config[section]["server"].items() if k != "startup_timeout_s"}
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    train = get_stage("train")
    assert config_key(train, loaded.variant("same")) == config_key(train, loaded)
    assert config_key(train, loaded.variant("r4")) != config_key(train, loaded)
    assert loaded.variant("r4").student.server == loaded.student.server
