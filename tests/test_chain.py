"""Stages declare the stages they consume and the outputs they produce; the chain is checked before the first
stage runs, and a stage run alone is refused while what it consumes is missing (fast, no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.artifacts import write_json
from distill.cli import app
from distill.errors import UserError
from distill.layout import RunLayout
from distill.pipeline import STAGES, check_chain, get_stage
from helpers import DEMO_INPUTS, study_config, write_config


def test_every_stage_consumes_only_stages_that_run_before_it(tmp_path: Path) -> None:
    check_chain(STAGES, RunLayout(tmp_path / "empty"))  # an empty folder: each input is made on the way
    assert get_stage("compare").consumes == ("generate", "train") and get_stage("generate").consumes == ()
    with pytest.raises(UserError, match=r"filter consumes the generate stage, which has not finished .*"
                                        r"run `distill generate` first"):
        check_chain(("filter", "generate"), RunLayout(tmp_path / "empty"))


def test_a_stage_alone_names_every_stage_it_lacks_before_it_starts(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", study_config("m", DEMO_INPUTS))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["compare", "-c", str(config), "--run-dir", str(run)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "run `distill generate` first" in result.stderr and "run `distill train` first" in result.stderr
    assert not (run / "compare").exists(), "refused before compare starts"


def test_a_finished_stage_without_a_declared_output_is_refused(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "run")
    layout.generate.outputs.parent.mkdir(parents=True)
    layout.generate.outputs.write_bytes(b"rows")
    write_json(layout.manifest("generate"), {"outputs": {"outputs.parquet": "a" * 64}})
    with pytest.raises(UserError, match="filter consumes the generate stage, which finished without test.parquet"):
        check_chain(("filter",), layout)
    layout.generate.test.write_bytes(b"rows")
    write_json(layout.manifest("generate"), {"outputs": {"outputs.parquet": "a" * 64, "test.parquet": "b" * 64}})
    check_chain(("filter",), layout)
