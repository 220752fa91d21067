"""Every JSON file distill writes is strict JSON: no NaN or Infinity, which many readers refuse."""

import json
import math
from pathlib import Path

import pytest

from distill.artifacts import finite, write_json
from student.curves import curves


def test_write_json_refuses_non_finite_numbers_and_names_where(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    with pytest.raises(ValueError, match=r"metrics.json: .* at student.latency.1; write finite\(value\) there"):
        write_json(path, {"student": {"latency": [1.0, math.inf]}})
    assert not path.exists()
    write_json(path, {"student": {"latency": [1.0, finite(math.inf)], "loss": finite(math.nan), "n": finite(2.0)}})
    assert json.loads(path.read_text()) == {"student": {"latency": [1.0, None], "loss": None, "n": 2.0}}


def test_a_diverged_loss_is_null_in_the_training_curves(tmp_path: Path) -> None:
    history = curves([{"step": 1, "epoch": 0.5, "loss": math.nan}, {"step": 2, "epoch": 1.0, "loss": 0.5},
                      {"step": 2, "epoch": 1.0, "eval_loss": math.inf, "eval_task_score": 0.5}])
    write_json(tmp_path / "curves.json", history)
    strict = json.loads((tmp_path / "curves.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert [p["loss"] for p in strict["train"]] == [None, 0.5] and strict["eval"][0]["loss"] is None
