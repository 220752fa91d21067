"""Trackers: the run summary to tensorboard for real and offline, report_to passed to the Trainer, and a tracker
that is not installed named with what to install."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from distill.config import load_config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.tracking import log_summary, prepare_trackers
from helpers import DEMO_INPUTS, study_config, write_config

METRICS = {"agreement": 0.8, "student": {"accuracy": 0.7, "model": "m"}, "gates_passed": True}


def _config(tmp_path: Path, **tracking):
    return load_config(write_config(tmp_path / "c.yaml", study_config("m", DEMO_INPUTS, tracking=tracking)))


def _scalars(folder: Path) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}


def test_the_run_summary_goes_to_tensorboard_offline(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    layout = RunLayout(tmp_path / "run")
    log_summary(_config(tmp_path, report_to=["tensorboard"]), layout, METRICS)
    scalars = _scalars(layout.root / "tensorboard" / "summary")
    assert scalars == pytest.approx({"agreement": 0.8, "student.accuracy": 0.7})


def test_the_trainer_gets_report_to_and_where_to_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "elsewhere")  # restored by monkeypatch after the test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "elsewhere")
    config = _config(tmp_path, report_to=["tensorboard", "mlflow"], mlflow_uri="file:///tmp/x", experiment="exp")
    assert prepare_trackers(config, RunLayout(tmp_path / "run")) == ["tensorboard", "mlflow"]
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "run" / "tensorboard" / "train")
    assert os.environ["MLFLOW_TRACKING_URI"] == "file:///tmp/x" and os.environ["MLFLOW_EXPERIMENT_NAME"] == "exp"


def test_trackio_gets_the_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = SimpleNamespace(init=lambda **kw: calls.append(("init", kw["project"], kw["name"])),
                           log=lambda values: calls.append(("log", values)), finish=lambda: calls.append("finish"),
                           __spec__=SimpleNamespace(name="trackio"))
    monkeypatch.setitem(sys.modules, "trackio", fake)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    log_summary(_config(tmp_path, report_to=["trackio"], experiment="exp"), RunLayout(tmp_path), METRICS)
    assert calls == [("init", "exp", "tiny"), ("log", {"agreement": 0.8, "student.accuracy": 0.7}), "finish"]


def test_a_tracker_not_installed_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install wandb"):
        prepare_trackers(_config(tmp_path, report_to=["wandb"]), RunLayout(tmp_path))


def test_mlflow_in_report_to_needs_its_uri(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="report_to has mlflow: set mlflow_uri"):
        _config(tmp_path, report_to=["mlflow"])
    with pytest.raises(UserError, match="tracking.report_to.0"):
        _config(tmp_path, report_to=["comet"])
