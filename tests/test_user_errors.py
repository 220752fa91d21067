"""Bad input through the real CLI: each is one red line (or one message listing every problem) and exit 1, naming
the file, row or key and what to do; never a traceback (exit 2, kept for bugs) and never silently accepted."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.cli import app
from helpers import DEMO_INPUTS, REPO, study_config, write_config

runner = CliRunner()
MODEL = "smollm2-135m-instruct"  # a catalogue name: `validate` accepts it without loading (or pulling) it


def _config(tmp_path: Path, change: Callable[[dict], object] | None = None) -> Path:
    """A config file of its own (each call writes a new one), changed by `change`."""
    config = study_config(MODEL, DEMO_INPUTS)
    if change is not None:
        change(config)
    return write_config(tmp_path / f"c{len(list(tmp_path.glob('c*.yaml')))}.yaml", config)


def _refused(args: list[str], *words: str, code: int = 1) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    return result.stderr


def _data(**keys: object) -> Callable[[dict], None]:
    def change(config: dict) -> None:
        if "test" in keys:
            del config["data"]["test_size"]
        config["data"].update(keys)
    return change


def test_unreadable_files_are_user_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    _refused(["validate", "-c", _config(tmp_path, _data(inputs=str(empty)))], f"{empty}: no rows", "header")
    renamed = tmp_path / "inputs.parquet"
    renamed.write_bytes(DEMO_INPUTS.read_bytes())
    _refused(["validate", "-c", _config(tmp_path, _data(inputs=str(renamed)))],
             f"{renamed}: not a Parquet file", "data.format")
    _refused(["validate", "-c", tmp_path], f"{tmp_path}: is a folder", "-c")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(_config(tmp_path).read_text().replace("name: tiny", "name: t\xe9").encode("latin-1"))
    _refused(["validate", "-c", latin1], f"{latin1}: line 1: not UTF-8", "re-save")


def test_a_run_folder_that_cannot_be_written_is_a_user_error(tmp_path: Path) -> None:
    config = _config(tmp_path)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for run_dir in (a_file, a_file / "run"):
        _refused(["filter", "-c", config, "--run-dir", run_dir], f"{run_dir}: cannot be used as the run folder",
                 "--run-dir")
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    if _writable(read_only):  # root writes anywhere; sysfs refuses even root
        read_only = Path("/sys/kernel")
        if not read_only.is_dir() or _writable(read_only):
            pytest.skip("no folder here is read-only for this user")
    _refused(["filter", "-c", config, "--run-dir", read_only], f"{read_only}: cannot be used as the run folder")


def _writable(folder: Path) -> bool:
    try:
        (folder / "probe").touch()
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../up", "a\\b"])
def test_a_name_that_is_not_a_folder_name_is_refused(tmp_path: Path, name: str) -> None:
    _refused(["validate", "-c", _config(tmp_path, lambda c: c.update(name=name))], "name:", "runs/<name>")
    _refused(["validate", "-c", _config(tmp_path, lambda c: c.update(variants={name: {"epochs": 1}}))],
             f"variant name {name!r}")


def test_a_test_file_holding_the_inputs_is_refused_unless_allowed(tmp_path: Path) -> None:
    same = _config(tmp_path, _data(test=str(DEMO_INPUTS), max_inputs=None))
    _refused(["validate", "-c", same], "(data.test) and", "hold the same queries", "data.allow_test_in_inputs")
    # The stage refuses it too, before the teacher is asked anything.
    _refused(["generate", "-c", same, "--run-dir", tmp_path / "run"], "hold the same queries")
    assert not (tmp_path / "run" / "generate" / "cache.sqlite").exists()
    # Every test query among the inputs (a subset of them): refused as well.
    subset = tmp_path / "subset.csv"
    subset.write_text("".join(DEMO_INPUTS.read_text().splitlines(keepends=True)[:21]))
    _refused(["validate", "-c", _config(tmp_path, _data(test=str(subset)))], "20 of 176 inputs repeat a test query")
    allowed = _config(tmp_path, _data(test=str(DEMO_INPUTS), allow_test_in_inputs=True))
    result = runner.invoke(app, ["validate", "-c", str(allowed)])
    assert result.exit_code == 0 and "176 row(s) repeat a test query" in result.stderr, result.output


def test_models_are_checked_before_anything_is_paid_for(tmp_path: Path) -> None:
    typo = _config(tmp_path, lambda c: c["teacher"].update(model="qwen2.5-coder-1.5b-instuct"))
    _refused(["validate", "-c", typo], "teacher.model: 'qwen2.5-coder-1.5b-instuct' is not a local folder",
             "did you mean qwen2.5-coder-1.5b-instruct?")
    missing = tmp_path / "no-such-student"
    no_student = _config(tmp_path, lambda c: c["student"].update(model=str(missing)))
    _refused(["validate", "-c", no_student], f"student.model: {missing}: model folder not found")
    _refused(["run", "-c", no_student, "--run-dir", tmp_path / "run"], f"student.model: {missing}")
    assert not (tmp_path / "run").exists()  # refused before the run began: no teacher started, no label bought
    gguf = _config(tmp_path, lambda c: c["student"].update(model=str(tmp_path / "m.gguf")))
    _refused(["validate", "-c", gguf], "m.gguf: GGUF file not found")
    served = _config(tmp_path, lambda c: c["teacher"].update(model="any-name", url="http://127.0.0.1:9/v1"))
    assert runner.invoke(app, ["validate", "-c", str(served)]).exit_code == 0  # the endpoint's name, not ours


@pytest.mark.parametrize(("labels", "words"), [
    (["billing", "refund", "billing"], ["task: `labels`: 'billing' given more than once"]),
    (["billing", "refund", " "], ["task: `labels`: a label is empty"]),
    (["billing"], ["give at least two labels"]),
])
def test_bad_label_sets_are_refused(tmp_path: Path, labels: list[str], words: list[str]) -> None:
    _refused(["validate", "-c", _config(tmp_path, lambda c: c["task"].update(labels=labels))], *words)
    labels_file = tmp_path / "labels.json"
    labels_file.write_text(json.dumps(labels))
    as_file = _config(tmp_path, lambda c: (c["task"].pop("labels"), c["task"].update(labels_file=str(labels_file))))
    _refused(["validate", "-c", as_file], f"{labels_file} (task.labels_file)")


def test_strict_keys_and_values(tmp_path: Path) -> None:
    config = _config(tmp_path)
    repeated = tmp_path / "repeated.yaml"
    repeated.write_text(config.read_text() + "name: again\n")
    _refused(["validate", "-c", repeated], f"{repeated}: line", "key 'name' given twice (first on line 1)")
    _refused(["validate", "-c", _config(tmp_path, lambda c: c["student"].update(epochs=True))],
             "student.epochs: true is not a number")
    _refused(["validate", "-c", config, "--set", "student.batch_size=false"],
             "student.batch_size: false is not a number (given with --set)")
    _refused(["validate", "-c", _config(tmp_path, lambda c: c["data"].update(test=str(DEMO_INPUTS)))],
             "data: test_size holds rows out of `inputs` when there is no `test` file")
    _refused(["validate", "-c", _config(tmp_path, lambda c: c["data"].update(test_file="t.csv"))],
             "data.test_file: unknown key; did you mean data.test?")
    _refused(["validate", "-c", config, "--set", "data.test_file=t.csv"], "did you mean data.test?")
    result = runner.invoke(app, ["validate", "-c", str(config), "--set", "student.epochs=1"])
    assert result.exit_code == 0, result.output


def test_floods_are_summarised_by_value(tmp_path: Path) -> None:
    inputs = tmp_path / "in.csv"
    inputs.write_text("id,text,category\n" + "".join(f"{i},message {i},not_a_label\n" for i in range(545))
                      + "545,,billing\n" + "".join(f"7,text {i},billing\n" for i in range(544)))
    stderr = _refused(["validate", "-c", _config(tmp_path, _data(inputs=str(inputs), id_column="id"))])
    lines = stderr.strip().splitlines()
    assert len(lines) == 4, stderr  # the heading, then one line per kind of problem
    assert lines[1].startswith(f"{inputs}: 545 rows (row 1 (line 2), row 2 (line 3), row 3 (line 4), ...): column "
                               "'category': gold answer 'not_a_label' is not valid for the task")
    assert lines[2] == f"{inputs}: row 546 (line 547), column 'text': empty or missing text; fix or remove that row"
    assert lines[3] == (f"{inputs}: 543 rows (row 548 (line 549), row 549 (line 550), row 550 (line 551), ...): "
                        "column 'id': id '7' repeats row 547; ids must be unique")


def test_status_needs_a_run_folder_and_shows_a_running_stage(tmp_path: Path) -> None:
    _refused(["status", tmp_path], f"{tmp_path}: not a run folder")
    _refused(["status", tmp_path / "nope"], "no such run folder")
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom distill.layout import RunLayout\n"
         "from distill.pipeline import mark_running, run_lock\nlayout = RunLayout(Path(sys.argv[1]))\n"
         "with run_lock(layout):\n    mark_running(layout, 'train')\n    print('held', flush=True)\n"
         "    time.sleep(60)\n", str(run_dir)],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = runner.invoke(app, ["status", str(run_dir), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["stages"] == {"generate": "missing", "filter": "missing",
                                                       "train": "running", "compare": "missing"}
    finally:
        holder.kill()
        holder.wait()
    result = runner.invoke(app, ["status", str(run_dir), "--json"])  # killed: its note no longer counts
    assert json.loads(result.stdout)["stages"]["train"] == "missing"


def test_a_gate_on_an_unknown_metric_is_refused_before_any_stage(tmp_path: Path) -> None:
    config = _config(tmp_path)
    for command in ("run", "compare"):
        _refused([command, "-c", config, "--run-dir", tmp_path / "run", "--gate", "student.accuracy>=0.3"],
                 "gate 'student.accuracy>=0.3': no metric 'student.accuracy'", "quality")
    assert not (tmp_path / "run").exists()



def test_a_gate_on_a_metric_this_run_lacks_fails_with_exit_3_and_a_summary(tmp_path: Path, monkeypatch) -> None:
    """Without gold answers there is no student quality: the gate cannot pass, and the run still says what it did."""
    import dataclasses

    from distill import cli, pipeline
    from distill.artifacts import write_json
    from distill.layout import RunLayout

    layout = RunLayout(tmp_path / "run")
    metrics = {"agreement": 0.9, "task": {"quality_name": "accuracy"}, "teacher": {"quality": None},
               "student": {"quality": None}, "cost_ratio": 0.1, "break_even_queries": None,
               "recommendation": {"verdict": "distil"}}

    def stage_run(config, run_layout) -> None:  # stands in for the real stages: compare's metrics lack quality
        write_json(run_layout.compare.metrics, metrics)

    for name in pipeline.STAGES:
        stage = pipeline.get_stage(name)
        monkeypatch.setitem(pipeline.stage_registry(), name, dataclasses.replace(stage, run=stage_run))
    monkeypatch.setattr(cli, "_print_report", lambda *_: None)
    result = runner.invoke(app, ["run", "-c", str(_config(tmp_path)), "--run-dir", str(layout.root),
                                 "--gate", "student.quality>=0.5", "--gate", "agreement>=0.8"])
    assert result.exit_code == 3, result.output
    assert "gate student.quality>=0.5: FAILED (this run has no value for student.quality)" in result.stderr
    assert "gate agreement>=0.8: passed (value 0.9)" in result.stderr
    summary = json.loads(layout.summary.read_text())
    assert summary["gates_passed"] is False and [g["passed"] for g in summary["gates"]] == [False, True]
