"""The console: plain lines at a steady cadence off a terminal (no carriage returns, no escape codes), a live
bar on one, nothing under --quiet; library messages into the stage's log file; training shows loss and metric."""

from __future__ import annotations

import importlib
import logging
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from distill.console import configure, progress, stage_log
from distill.console.progress import NORMAL, QUIET, SETTINGS, VERBOSE


@pytest.fixture(autouse=True)
def restore_settings():
    saved = (SETTINGS.verbosity, SETTINGS.interactive, SETTINGS.interval_s)
    yield
    SETTINGS.verbosity, SETTINGS.interactive, SETTINGS.interval_s = saved


def test_off_a_terminal_progress_is_plain_lines_at_a_cadence(capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    configure(NORMAL, interactive=False)
    SETTINGS.interval_s = 30
    now = [0.0]
    module = importlib.import_module("distill.console.progress")
    monkeypatch.setattr(module, "time", SimpleNamespace(monotonic=lambda: now[0], strftime=time.strftime))
    with progress("teacher labels", 12, "req") as bar:
        for _ in range(12):
            now[0] += 10  # a request every 10 s
            bar.update(loss=0.5)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and "\x1b" not in err
    assert len(lines) == 1 + 4, lines  # a first line, then one per 30 s of 120 s (the last one says 12/12)
    assert lines[-1].endswith("teacher labels: 12/12 req (100%), 0.1 req/s, 2:00 elapsed, loss 0.5"), lines[-1]


def test_quiet_prints_nothing_and_a_terminal_gets_a_live_bar(capsys: pytest.CaptureFixture) -> None:
    configure(QUIET, interactive=False)
    with progress("x", 3) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""
    configure(NORMAL, interactive=True)
    with progress("train", 3, "step") as bar:
        assert bar.live is not None
        bar.update(3, loss=0.25)
    assert "loss 0.25" in capsys.readouterr().err


def test_library_messages_go_to_the_stage_log(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    configure(NORMAL, interactive=False)
    log = tmp_path / "train" / "stage.log"
    with stage_log("train", log):
        logging.getLogger("transformers.trainer").warning("a library warning")
        warnings.warn("a python warning", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    text = log.read_text()
    assert "a library warning" in text and "a python warning" in text
    assert "a library warning" not in err and f"library messages: {log}" in err
    logging.getLogger("transformers.trainer").warning("after the stage")
    assert "after the stage" not in log.read_text()


def test_verbose_also_echoes_library_messages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    configure(VERBOSE, interactive=False)
    with stage_log("filter", tmp_path / "stage.log"):
        logging.getLogger("peft").info("some detail")
    assert "some detail" in capsys.readouterr().err


def test_a_stage_that_logs_nothing_leaves_no_folder(tmp_path: Path) -> None:
    with stage_log("train", tmp_path / "train" / "stage.log"):
        pass
    assert not (tmp_path / "train").exists(), "status tells a missing stage from an unfinished one by its folder"
    with stage_log("train", tmp_path / "train" / "stage.log"):
        (tmp_path / "train").mkdir()  # the stage ran, quietly
    assert (tmp_path / "train" / "stage.log").read_text().rstrip().endswith("train: ended")


def test_training_shows_steps_loss_and_the_task_metric(capsys: pytest.CaptureFixture) -> None:
    from distill.console.training import ConsoleCallback

    configure(NORMAL, interactive=False)
    SETTINGS.interval_s = 0
    callback = ConsoleCallback("eval_task_score", "accuracy")
    state = SimpleNamespace(is_world_process_zero=True, max_steps=4, global_step=0, epoch=0.0)
    callback.on_train_begin(None, state, None)
    state.global_step, state.epoch = 2, 1.0
    callback.on_log(None, state, None, logs={"loss": 1.25, "grad_norm": 3.0, "learning_rate": 1e-4})
    callback.on_log(None, state, None, logs={"eval_loss": 0.75, "eval_task_score": 0.625})
    state.global_step = 4
    callback.on_step_end(None, state, None)
    callback.on_train_end(None, state, None)
    last = capsys.readouterr().err.splitlines()[-1]
    assert "train: 4/4 step (100%)" in last
    assert "loss 1.25, eval loss 0.75, accuracy 0.625" in last and "grad_norm" not in last


def test_the_trainer_keeps_no_console_output_of_its_own() -> None:
    from transformers import PrinterCallback, ProgressCallback

    from distill.console.training import ConsoleCallback, use_console

    handler = SimpleNamespace(callbacks=[PrinterCallback(), ProgressCallback()])
    trainer = SimpleNamespace(remove_callback=lambda cls: handler.callbacks.__setitem__(
        slice(None), [c for c in handler.callbacks if not isinstance(c, cls)]),
        add_callback=handler.callbacks.append)
    use_console(trainer, "eval_task_score", "accuracy")
    assert [type(c) for c in handler.callbacks] == [ConsoleCallback]


def test_rich_bar_is_not_used_for_a_file() -> None:
    configure(NORMAL, interactive=None)  # decided by stderr, which pytest captures: not a terminal
    bar = progress("x", 1)
    assert bar.live is None
    bar.close()


def test_a_run_logged_to_a_file_has_no_bars_and_the_students_card(tmp_path: Path, tiny_model: Path) -> None:
    """The cron case end to end on the tiny model: `distill run ... > log 2>&1` with overrides and tensorboard."""
    import json
    import subprocess
    import sys

    import yaml

    from helpers import DEMO_INPUTS, study_config, write_config

    config = study_config(tiny_model, DEMO_INPUTS)
    config["student"].update({"epochs": 2, "export_merged": False})
    config["compare"]["prompt_baseline"] = False
    path = write_config(tmp_path / "c.yaml", config)
    run_dir, log = tmp_path / "run", tmp_path / "log"
    with open(log, "wb") as out:
        subprocess.run([sys.executable, "-m", "distill.cli", "run", "-c", str(path), "--run-dir", str(run_dir),
                        "--set", "student.epochs=1", "--set", "tracking.report_to=[tensorboard]"],
                       stdout=out, stderr=subprocess.STDOUT, check=True, timeout=900,
                       env={**__import__("os").environ, "DISTILL_PROGRESS_INTERVAL_S": "1"})
    text = log.read_text()
    assert "\r" not in text and "\x1b[" not in text, text[-2000:]
    assert "train: " in text and "step (100%)" in text, "plain progress lines with the step count"
    assert "{'loss'" not in text, "no raw metric dicts"
    manifest = json.loads((run_dir / "train" / "manifest.json").read_text())
    assert manifest["config"]["student"]["epochs"] == 1.0
    card = (run_dir / "train" / "adapter" / "README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["base_model"] == str(tiny_model)
    assert "compare/adapter_card.md" in card, "train's card says where its results are written"
    assert "adapter/README.md" in manifest["outputs"], "train writes and hashes its own card"
    compared = (run_dir / "compare" / "adapter_card.md").read_text()
    assert "agreement with the teacher" in compared and yaml.safe_load(compared.split("---\n")[1])
    status = subprocess.run([sys.executable, "-m", "distill.cli", "status", str(run_dir), "--json"],
                            capture_output=True, text=True, check=True)
    assert set(json.loads(status.stdout)["stages"].values()) == {"complete"}, "compare's cards damage nothing"
    assert (run_dir / "filter" / "README.md").is_file() and (run_dir / "train" / "stage.log").is_file()
    assert list((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    metrics = json.loads((run_dir / "compare" / "metrics.json").read_text())
    assert _scalars_in(run_dir / "tensorboard" / "summary")["agreement"] == pytest.approx(metrics["agreement"],
                                                                                         abs=1e-6)


def _scalars_in(folder: Path) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
