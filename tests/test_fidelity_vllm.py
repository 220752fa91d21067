"""The extraction grammar and the fidelity check against a real vLLM server (tiny random model): the server takes
the per-request grammar, answers keep its layout, and generate's check reaches the filter report."""

import json
from pathlib import Path

from distill.artifacts import read_rows
from distill.config import load_config
from distill.filter.stage import filter_stage
from distill.layout import RunLayout
from distill.tasks import make_task
from helpers import study_config, write_config
from teacher.generate import generate

SCHEMA = {"type": "object", "additionalProperties": False,
          "properties": {"people": {"type": ["string", "null"], "maxLength": 12},
                         "date": {"type": ["string", "null"], "maxLength": 12}}}


def test_grammar_and_fidelity_check_on_a_real_server(tmp_path: Path, tiny_model: Path, served_tiny) -> None:
    inputs = tmp_path / "bookings.jsonl"
    inputs.write_text("".join(json.dumps({"text": f"Table for {n} on Friday please"}) + "\n" for n in range(20)))
    config = study_config(tiny_model, inputs, task={"type": "extraction", "instruction": "Extract the booking.",
                                                    "json_schema": SCHEMA})
    config["data"] = {"inputs": str(inputs), "test_size": 4}
    config["teacher"] = {"model": "tiny-teacher", "url": served_tiny.base_url, "max_tokens": 48, "concurrency": 8,
                         "fidelity_check": 5}
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    layout = RunLayout(tmp_path / "run")
    generate(loaded, layout)

    task = make_task(loaded.task)
    rows = read_rows(layout.generate.outputs)
    assert all(row["error"] is None or "not valid JSON" in row["error"] for row in rows)  # the server took it
    valid = [row for row in rows if row["label"] is not None]
    assert valid and all(task.parse(row["raw"]).value == row["label"] for row in valid)
    # The layout the prompt shows: one line, a space after each `:` and `,`.
    assert all('":' not in row["raw"] or '": ' in row["raw"] for row in valid)
    assert all("\n" not in row["raw"] for row in valid)
    result = json.loads(layout.generate.fidelity.read_text())
    assert result["sample"] == 5
    # Every sampled row is counted once, and every valid unconstrained answer either matches or is a difference.
    assert result["unconstrained_valid"] + result["unconstrained_invalid"] == 5
    assert result["differences"] == result["unconstrained_valid"] - result["same_answer"]
    filter_stage(loaded, layout)
    assert json.loads(layout.filter.report_json.read_text())["constraint_fidelity"]["sample"] == 5
    assert "## Constraint fidelity" in layout.filter.report_md.read_text()
