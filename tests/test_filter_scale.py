"""The filter streams: its memory does not grow with the rows, and batches change nothing in its outputs."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import distill.artifacts
import distill.filter.order
from distill.artifacts import read_rows
from distill.filter.stage import filter_stage
from distill.layout import RunLayout
from helpers import drop_reasons, split_train_eval

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from scale_rows import make_config, write_generate_folder  # noqa: E402


def test_peak_memory_does_not_grow_with_the_rows() -> None:
    """15,000 and 150,000 rows, each filtered in a fresh child process, near-dedup on as shipped. Holding the rows
    (about 1.9 KB each, as the filter did before it streamed: 193 MB measured here) exceeds the bound, and so did
    the in-memory near-dup index (about 1.4 KB a kept row); streaming adds what the scratch buckets, the dedup keys
    and the near-dup index's page cache take."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "scale_rows.py"), "--rows", "15000", "150000"],
                         capture_output=True, text=True, check=True, cwd=REPO, timeout=600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["counts"]["rows_in"] == 150_000
    growth = result["peak_rss_mb"] - result["peak_rss_mb_at_baseline"]
    assert growth < 120, result


def _outputs(folder: Path) -> dict:
    files = RunLayout(folder).filter
    return {"train": read_rows(files.train), "eval": read_rows(files.eval), "dropped": read_rows(files.dropped),
            "report": files.report_json.read_text()}


def test_batches_and_buckets_change_no_output(tmp_path: Path, monkeypatch) -> None:
    """Tiny batches and buckets (every check crosses batch boundaries, the seeded order spans 30 buckets) write
    what one batch writes, and that is what the in-memory rules say: the same rows, reasons and order."""
    write_generate_folder(tmp_path / "whole", 3_000)
    config = make_config(tmp_path / "whole")
    rules = {"near_dup_threshold": 0.8, "max_per_label": 30, "max_train_rows": 1_500, "eval_fraction": 0.2}
    config = config.model_copy(update={"filter": config.filter.model_copy(update=rules)})
    filter_stage(config, RunLayout(tmp_path / "whole"))
    write_generate_folder(tmp_path / "batched", 3_000)
    monkeypatch.setattr(distill.artifacts, "BATCH_ROWS", 7)
    monkeypatch.setattr(distill.filter.order, "BUCKET_ROWS", 50)
    filter_stage(config, RunLayout(tmp_path / "batched"))
    whole, batched = _outputs(tmp_path / "whole"), _outputs(tmp_path / "batched")
    assert batched == whole

    rows = read_rows(RunLayout(tmp_path / "whole").generate.outputs)
    reasons = drop_reasons(rows, config, ["an unrelated held out question"])
    train, evaluation = split_train_eval([r for r, why in zip(rows, reasons, strict=True) if why is None], 0.2, 0)
    assert [r["id"] for r in whole["eval"]] == [r["id"] for r in evaluation]
    assert [r["id"] for r in whole["train"]] == [r["id"] for r in train[:1_500]]
    expected_drops = [(r["id"], why) for r, why in zip(rows, reasons, strict=True) if why]
    expected_drops += [(r["id"], "over_label_budget") for r in train[1_500:]]
    assert [(r["id"], r["drop_reason"]) for r in whole["dropped"]] == expected_drops
    assert {"over_label_cap", "near_duplicate", "duplicate", "invalid"} <= set(Counter(reasons))


def test_hashed_keys_batch_after_batch_are_a_set_row_after_row() -> None:
    import numpy as np

    from distill.filter.dedup import HashSet, first_seen

    rng = np.random.default_rng(0)
    keys = rng.integers(0, 5_000, 40_000).astype(np.uint64)  # many repeats, within and across batches
    seen, found = HashSet(), []
    for start in range(0, len(keys), 1_000):
        found += first_seen(keys[start:start + 1_000], seen).tolist()
    earlier: set[int] = set()
    expected = [not (k in earlier or earlier.add(k)) for k in keys.tolist()]
    assert found == expected
    assert sum(len(run) for run in seen.runs) == len(earlier) and len(seen.runs) > 1
    merged = np.concatenate(seen.runs)
    assert len(np.unique(merged)) == len(merged)  # runs are disjoint: 8 bytes a distinct key
    assert all((np.diff(run.astype(np.int64)) > 0).all() for run in seen.runs)
