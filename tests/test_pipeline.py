"""All four stages through the real CLI: a real vLLM server, real peft training, real files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.artifacts import read_rows, sha256_file
from distill.pipeline import STAGES
from helpers import DEMO_INPUTS, DEMO_LABELS, study_config, write_config


def _distill(*args: str | Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "distill.cli", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stderr[-4000:]}"
    return result


def _files_outside(run_dir: Path, stage: str) -> dict[str, tuple[str, int]]:
    """Every file of the run outside `stage`'s folder (the lock's note aside): its hash and modification time."""
    return {str(p.relative_to(run_dir)): (sha256_file(p), p.stat().st_mtime_ns) for p in run_dir.rglob("*")
            if p.is_file() and p.parts[len(run_dir.parts)] not in (stage, "run.lock", "run.lock.holder.json")}


@pytest.mark.slow
def test_four_stages_end_to_end(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path / "study.yaml", study_config(tiny_model, DEMO_INPUTS))
    run_dir = tmp_path / "run"
    for stage in STAGES:
        before = _files_outside(run_dir, stage)
        output = _distill(stage, "-c", config, "--run-dir", run_dir).stdout
        assert _files_outside(run_dir, stage) == before, f"{stage} wrote outside its folder"

    assert "teacher vs student" in output and "report:" in output
    for stage in STAGES:
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        assert manifest["stage"] == stage
        assert {"config", "inputs", "packages", "counts", "timings", "seconds"} <= manifest.keys()
        assert all(len(entry["sha256"]) == 64 for entry in manifest["inputs"]["files"].values())
        assert "torch" in manifest["packages"] and manifest["config"]["name"] == "tiny"
    assert json.loads((run_dir / "generate" / "manifest.json").read_text())["inputs"]["files"].keys() == {
        "data.inputs"}

    outputs = read_rows(run_dir / "generate" / "outputs.parquet")
    assert len(outputs) == 40 and len({r["id"] for r in outputs}) == 40
    assert all(r["label"] in DEMO_LABELS and r["error"] is None for r in outputs), "choice constraint holds"
    assert all(r["logprob"] is not None and r["logprob"] <= 0 and r["prompt_tokens"] > 0 for r in outputs)
    assert (run_dir / "generate" / "server.log").stat().st_size > 0

    assert (run_dir / "train" / "adapter" / "adapter_config.json").exists()
    metrics = json.loads((run_dir / "compare" / "metrics.json").read_text())
    assert metrics["n_queries"] == 12
    for side in ("teacher", "student"):
        summary = metrics[side]
        assert isinstance(summary["model"], str)
        assert isinstance(summary["quality"], float) and 0 <= summary["quality"] <= 1
        low, high = summary["quality_ci"]
        assert low <= summary["quality"] <= high
        assert summary["concurrency"] in (1, 4, 16) and summary["sweep"][0]["concurrency"] == 1
        assert set(summary["latency_ms"]) == {"p50", "p95", "p99"}
        assert all(v > 0 for v in summary["latency_ms"].values())
        assert summary["queries_per_s"] > 0 and summary["prompt_tokens_per_query"] > 0
        assert summary["completion_tokens_per_query"] > 0 and summary["cost_per_1k_queries"] > 0
    assert metrics["teacher"]["prompt_tokens_per_query"] > metrics["student"]["prompt_tokens_per_query"]
    assert 0 <= metrics["agreement"] <= 1
    assert isinstance(metrics["cost_ratio"], float)
    assert metrics["break_even_queries"] is None or metrics["break_even_queries"] > 0
    html = (run_dir / "compare" / "report.html").read_text()
    # 12 test queries cannot show a student within 0.02 of its teacher: neither it nor a cascade may pass.
    assert metrics["recommendation"]["verdict"] in ("keep_teacher", "insufficient_evidence")
    assert metrics["recommendation"]["quality_diff_ci"] == metrics["quality_diff_ci"]
    assert metrics["agreement_ci"][0] <= metrics["agreement"] <= metrics["agreement_ci"][1]
    assert set(metrics["concurrency"]) == {"teacher", "adapter", "merged", "baseline"}
    assert "Verdict (" in html and "accuracy vs gold" in html and "cost per 1k queries" in html
    assert html.count("data:image/png;base64,") == 5
    assert set(metrics["students"]) == {"adapter", "merged"} and metrics["baseline"]["queries_per_s"] > 0
    assert metrics["adapter_merged_agreement"] >= 0.9, "merging the adapter must not change the answers"
    train_outputs = json.loads((run_dir / "train" / "manifest.json").read_text())["outputs"]
    assert {"adapter/README.md", "merged/README.md"} <= train_outputs.keys(), "train hashes the cards it writes"
    for student in ("adapter", "merged"):
        assert "| agreement with the teacher | 1 |" in (run_dir / "compare" / f"{student}_card.md").read_text()

    # The same command again sends no request: every answer comes from the durable cache.
    _distill("generate", "-c", config, "--run-dir", run_dir)
    rerun = json.loads((run_dir / "generate" / "manifest.json").read_text())
    assert rerun["counts"]["requests_sent"] == 0 and rerun["counts"]["from_cache"] == 40
    assert read_rows(run_dir / "generate" / "outputs.parquet") == outputs
