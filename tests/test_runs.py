"""Run orchestration without model servers: keys and skips, damage detection, locks, gates, status, MLflow."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.artifacts import write_json, write_rows
from distill.cli import EXIT_LOCKED, app
from distill.compare.gates import check_gates
from distill.config import load_config
from distill.errors import UserError
from distill.filter.stage import filter_stage
from distill.layout import RunLayout
from distill.pipeline import LockedError, decide, get_stage, run_lock
from distill.status import stage_states
from fake_openai import FakeEndpoint
from helpers import DEMO_INPUTS, study_config, write_config
from teacher.generate import generate


def _config(tmp_path: Path, url: str, **filter_options: object):
    config = study_config("fake-model", DEMO_INPUTS)
    config["teacher"] = {"model": "fake-model", "url": url, "concurrency": 4}
    config["filter"] = {"eval_fraction": 0.1, **filter_options}
    return load_config(write_config(tmp_path / "c.yaml", config))


@pytest.fixture
def labelled(tmp_path: Path):
    """A run folder with finished generate and filter stages, labelled by a scripted teacher."""
    with FakeEndpoint() as fake:
        config = _config(tmp_path, fake.url)
        generate(config, RunLayout(tmp_path / "run"))
        filter_stage(config, RunLayout(tmp_path / "run"))
        yield config, fake


def test_unchanged_stages_are_skipped_and_a_filter_change_reruns_only_downstream(tmp_path: Path, labelled) -> None:
    config, fake = labelled
    run_dir = tmp_path / "run"
    assert decide(get_stage("generate"), config, RunLayout(run_dir), forced=False)[0] == "skipped"
    assert decide(get_stage("filter"), config, RunLayout(run_dir), forced=False)[0] == "skipped"
    assert decide(get_stage("train"), config, RunLayout(run_dir), forced=False) == ("run", "no finished output")
    assert decide(get_stage("generate"), config, RunLayout(run_dir), forced=True) == ("run", "forced")

    stricter = _config(tmp_path, fake.url, eval_fraction=0.3)
    assert decide(get_stage("generate"), stricter, RunLayout(run_dir), forced=False)[0] == "skipped"
    assert decide(get_stage("filter"), stricter, RunLayout(run_dir), forced=False) == ("run",
                                                                                       "config or inputs changed")


def test_a_damaged_artifact_is_detected_and_rerun(tmp_path: Path, labelled) -> None:
    config, _ = labelled
    run_dir = tmp_path / "run"
    train = run_dir / "filter" / "train.parquet"
    train.write_bytes(train.read_bytes()[:-10])
    action, reason = decide(get_stage("filter"), config, RunLayout(run_dir), forced=False)
    assert action == "run" and "train.parquet" in reason
    assert [s["state"] for s in stage_states(RunLayout(run_dir))][:2] == ["complete", "damaged"]


def test_status_marks_stale_stages_and_prices_them(tmp_path: Path, labelled) -> None:
    config, fake = labelled
    run_dir = tmp_path / "run"
    states = {s["stage"]: s for s in stage_states(RunLayout(run_dir), _config(tmp_path, fake.url, eval_fraction=0.3))}
    assert states["generate"]["state"] == "complete" and states["filter"]["state"] == "stale"
    assert states["train"]["state"] == "missing" and states["compare"]["state"] == "missing"
    assert states["generate"]["cost"] >= 0 and states["generate"]["seconds"] > 0
    result = CliRunner().invoke(app, ["status", str(run_dir)])
    assert result.exit_code == 0 and "complete" in result.output and "missing" in result.output


def test_a_second_process_is_refused_the_lock_until_the_holder_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from distill.pipeline import run_lock\n"
            "from distill.layout import RunLayout\n"
        f"with run_lock(RunLayout(Path({str(tmp_path)!r}))):\n    print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(LockedError, match=f'"pid": {holder.pid}'):
        with run_lock(RunLayout(tmp_path)):
            pass
    config = write_config(tmp_path / "c.yaml", study_config("m", DEMO_INPUTS))
    result = CliRunner().invoke(app, ["filter", "-c", str(config), "--run-dir", str(tmp_path)])
    assert result.exit_code == EXIT_LOCKED and str(holder.pid) in result.stderr
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    time.sleep(0.1)
    with run_lock(RunLayout(tmp_path)):  # the kernel released the dead holder's lock: nothing stale remains
        assert json.loads((tmp_path / "run.lock.holder.json").read_text())["pid"] == os.getpid()


def test_gates() -> None:
    metrics = {"agreement": 0.9, "student": {"quality": 0.7}, "cost_ratio": None}
    results = check_gates(["agreement>=0.95", "student.quality > 0.5"], metrics)
    assert [r["passed"] for r in results] == [False, True]
    with pytest.raises(UserError, match="expected METRIC OP NUMBER"):
        check_gates(["agreement is high"], metrics)
    with pytest.raises(UserError, match=r"no metric 'teacher.f1'; a gate may name agreement, .*quality"):
        check_gates(["teacher.f1>0.5"], metrics)
    # A real metric this run has no number for fails its gate (exit 3), never passes it.
    assert check_gates(["cost_ratio<0.5", "students.merged.quality>0"], metrics) == [
        {"gate": "cost_ratio<0.5", "value": None, "passed": False, "reason": "this run has no value for cost_ratio"},
        {"gate": "students.merged.quality>0", "value": None, "passed": False,
         "reason": "this run has no value for students.merged.quality"}]


def test_mlflow_logs_params_metrics_and_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from distill.tracking import log_run

    config = study_config("m", DEMO_INPUTS, tracking={"mlflow_uri": (tmp_path / "mlruns").as_uri()})
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    run_dir = tmp_path / "run"
    metrics = {"agreement": 0.8, "student": {"accuracy": 0.7, "model": "m"}}
    write_json(run_dir / "compare" / "metrics.json", metrics)
    for name in ("report.html", "report.md"):
        (run_dir / "compare" / name).write_text("report")
    write_rows(run_dir / "train" / "adapter" / "rows.parquet", [{"a": 1}])
    run_id = log_run(loaded, RunLayout(run_dir), metrics)
    run = mlflow.get_run(run_id)
    assert run.data.metrics == {"agreement": 0.8, "student.accuracy": 0.7}
    assert run.data.params["student.lora.r"] == "8"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "compare")}
    assert "compare/report.html" in artifacts
