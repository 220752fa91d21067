"""The near-dup index on disk: the decisions of a row-at-a-time in-memory index, in memory that does not grow with
the rows, in a scratch file that does not outlive the stage."""

import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from distill.artifacts import read_rows
from distill.filter import neardup, stage
from distill.filter.neardup import FILES, NUM_PERM, NearIndex, signature_matrix
from distill.filter.stage import filter_stage
from distill.layout import RunLayout

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from scale_rows import make_config, write_generate_folder  # noqa: E402


class ReferenceIndex:
    """The index as it was before it moved to disk: Python dicts, one row at a time (kept here as the reference)."""

    def __init__(self, threshold: float) -> None:
        from datasketch import MinHashLSH

        layout = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self.bands = [slice(i * layout.r, (i + 1) * layout.r) for i in range(layout.b)]
        self.threshold = threshold
        self.tables: list[dict[bytes, list[str]]] = [{} for _ in self.bands]
        self.signatures: dict[str, np.ndarray] = {}

    def add(self, key: str, signature: np.ndarray) -> None:
        for table, band in zip(self.tables, self.bands, strict=True):
            table.setdefault(signature[band].tobytes(), []).append(key)
        self.signatures[key] = signature

    def matches(self, signature: np.ndarray) -> list[str]:
        candidates = {key for table, band in zip(self.tables, self.bands, strict=True)
                      for key in table.get(signature[band].tobytes(), ())}
        return [key for key in candidates if (signature == self.signatures[key]).mean() >= self.threshold]


def _texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Rows and test queries: a third of the rows copy an earlier row (just before: the same batch; or far back:
    an earlier batch) or a test query with one or three words changed, so some candidates pass and some fail."""
    rng = np.random.default_rng(seed)
    fresh = lambda: [f"w{w}" for w in rng.integers(0, 3_000, rng.integers(8, 25))]  # noqa: E731
    tests = [fresh() for _ in range(40)]
    rows: list[list[str]] = []
    for i in range(n):
        roll = rng.random()
        if i == 0 or roll < 0.66:
            rows.append(fresh())
            continue
        source = (tests[rng.integers(len(tests))] if roll < 0.72 else
                  rows[max(0, i - rng.integers(1, 20))] if roll < 0.86 else rows[rng.integers(i)])
        words = list(source)
        for _ in range(1 if rng.random() < 0.6 else 3):
            words[rng.integers(len(words))] = f"w{rng.integers(3_000)}"
        rows.append(words)
    return [" ".join(words) for words in rows], [" ".join(words) for words in tests]


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_batches_on_disk_decide_as_the_in_memory_index_row_after_row(tmp_path: Path, threshold: float) -> None:
    texts, tests = _texts(3_000, seed=int(threshold * 10))
    matrix, test_matrix = signature_matrix(texts), signature_matrix(tests)

    reference, expected, same_batch = ReferenceIndex(threshold), [], 0
    for j, signature in enumerate(test_matrix):
        reference.add(f"test:{j}", signature)
    for i, signature in enumerate(matrix):
        matches = reference.matches(signature)
        if any(key.startswith("test:") for key in matches):
            expected.append("leaks_test")
        elif matches:
            expected.append("near_duplicate")
            same_batch += all(int(key) // 250 == i // 250 for key in matches)
        else:
            expected.append(None)
            reference.add(str(i), signature)

    index, found = NearIndex(threshold, tmp_path, test_matrix), []
    for start in range(0, len(texts), 250):
        found += index.screen(matrix[start:start + 250], np.arange(start, min(start + 250, len(texts))))
    index.close()
    assert found == expected
    assert expected.count("leaks_test") > 20 and expected.count("near_duplicate") > 100 and same_batch > 30


def test_the_index_keeps_its_state_on_disk_not_in_python(tmp_path: Path) -> None:
    """200,000 rows leave no more Python-side state than 20,000 (the in-memory index grew by ~1.4 KB a row: about
    250 MB more here); the rows are in the file."""
    rng = np.random.default_rng(0)
    index = NearIndex(0.8, tmp_path, np.empty((0, NUM_PERM), dtype=np.uint32))
    tracemalloc.start()
    held, number = {}, 0
    for total in (20_000, 200_000):
        while number < total:
            matrix = rng.integers(0, 2**32, (4_096, NUM_PERM), dtype=np.uint32)
            assert index.screen(matrix, np.arange(number, number + 4_096)) == [None] * 4_096
            number += 4_096
        on_disk = sum((tmp_path / name).stat().st_size for name in FILES.values())
        held[total] = (tracemalloc.get_traced_memory()[0], on_disk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    index.close()
    assert held[200_000][0] - held[20_000][0] < 1_000_000, held
    assert peak < 40_000_000, peak  # a batch's arrays and rows, whatever the index holds
    assert held[200_000][1] > 8 * held[20_000][1], held  # the signatures and band keys went to disk


def _stage_with_near_dup(folder: Path, rows: int = 3_000):
    write_generate_folder(folder, rows)
    return make_config(folder, near_dup=0.8)


def test_the_index_files_are_gone_after_the_stage_and_after_a_failure(tmp_path: Path, monkeypatch) -> None:
    folders: list[Path] = []
    opened = NearIndex.__init__

    def spy(self, threshold, folder, test_signatures):
        opened(self, threshold, folder, test_signatures)
        folders.append(folder)

    monkeypatch.setattr(NearIndex, "__init__", spy)
    config = _stage_with_near_dup(tmp_path / "ok")
    manifest = filter_stage(config, RunLayout(tmp_path / "ok"))
    assert manifest["drops"]["near_duplicate"] > 0
    assert folders and folders[0].parent == tmp_path / "ok" / "filter" and not folders[0].exists()
    assert not list((tmp_path / "ok" / "filter").glob(".*"))

    def fail(*args, **kwargs):
        assert all((folders[-1] / name).exists() for name in FILES.values())  # on disk while rows are screened
        raise RuntimeError("disk full")

    monkeypatch.setattr(stage.SeededOrder, "add", fail)
    config = _stage_with_near_dup(tmp_path / "failed")
    with pytest.raises(RuntimeError, match="disk full"):
        filter_stage(config, RunLayout(tmp_path / "failed"))
    assert len(folders) == 2 and not folders[1].exists()
    assert not list((tmp_path / "failed" / "filter").glob(".*"))


def test_a_killed_runs_index_files_are_removed_by_the_next_run(tmp_path: Path) -> None:
    """A filter killed (-9) while its index is on disk leaves the file; the next run removes it and finishes."""
    config = _stage_with_near_dup(tmp_path, rows=60_000)
    script = ("import sys; sys.path.insert(0, 'bench'); from pathlib import Path; "
              "from scale_rows import make_config; from distill.filter.stage import filter_stage; "
              "from distill.layout import RunLayout; "
              f"filter_stage(make_config(Path({str(tmp_path)!r}), 0.8), RunLayout(Path({str(tmp_path)!r})))")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    pattern, deadline = f"filter/.scratch-*/{FILES['main']}", time.monotonic() + 120

    def started() -> bool:  # some batches screened: the file holds rows
        return any(path.stat().st_size > 500_000 for path in tmp_path.glob(pattern))

    while not started() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    stale = list(tmp_path.glob(pattern))
    assert stale, "killed while its index was on disk"
    manifest = filter_stage(config, RunLayout(tmp_path))
    assert not stale[0].exists() and not list((tmp_path / "filter").glob(".*"))
    assert manifest["counts"]["rows_in"] == 60_000
    assert len(read_rows(RunLayout(tmp_path).filter.eval)) == manifest["counts"]["eval"]


def test_band_keys_are_signed_64_bit_integers_that_survive_sqlite(tmp_path: Path) -> None:
    matrix = np.random.default_rng(1).integers(0, 2**32, (1_000, NUM_PERM), dtype=np.uint32)
    keys = neardup.band_keys(matrix, 5, 11)
    assert keys.dtype == np.int64 and (keys < 0).any() and len(np.unique(keys)) == keys.size
    index = NearIndex(0.8, tmp_path, matrix)  # stored as test queries: each finds itself again
    assert index.screen(matrix, np.arange(1_000)) == ["leaks_test"] * 1_000
    index.close()
