import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.artifacts import read_rows, write_json, write_rows
from distill.config import load_config
from distill.data.inputs import normalise
from distill.errors import UserError
from distill.filter.stage import filter_stage
from distill.layout import RunLayout
from helpers import DEMO_INPUTS, SHARED_DATA, drop_reasons, study_config, write_config, write_csv
from teacher.rows import TEACHER_COLUMNS, TEST_COLUMNS


def _generate_output(run_dir: Path, rows: list[dict], test_texts: tuple[str, ...] = ()) -> None:
    """What a finished generate stage leaves: the teacher's rows and the held-out test split."""
    layout = RunLayout(run_dir)
    write_rows(layout.generate.outputs, rows, TEACHER_COLUMNS)
    write_rows(layout.generate.test, [{"id": f"test:{i}", "text": t, "gold": None} for i, t in enumerate(test_texts)],
               TEST_COLUMNS)
    write_json(layout.manifest("generate"), {"stage": "generate"})


def _row(i: int, text: str, label: str | None, error: str | None = None) -> dict:
    return {"id": f"inputs:{i}", "text": text, "gold": None, "raw": label, "label": label, "error": error,
            "rationale": None, "vote_share": None, "samples": "[]", "logprob": -0.1, "top_logprobs": "[]",
            "prompt_tokens": 10, "completion_tokens": 2, "cached_tokens": 0, "latency_ms": 5.0,
            "finish_reason": "stop", "serving_s": 0.01}


def test_filter_drops_invalid_duplicates_and_test_leaks(tmp_path: Path) -> None:
    inputs = write_csv(tmp_path / "in.csv", [
        {"text": "held out test message", "category": "billing"},
        *[{"text": f"message {i}", "category": "billing"} for i in range(6)],
    ])
    config = study_config("m", inputs)
    config["data"] = {"inputs": str(inputs), "test_size": 1, "seed": 0}
    config["filter"] = {"eval_fraction": 0.25}
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    from distill.data.inputs import split_inputs

    test_text = split_inputs(loaded).test[0].text
    _generate_output(tmp_path, [
        _row(0, "Reset my password", "account_access"),
        _row(1, "reset   my PASSWORD ", "account_access"),  # duplicate after normalising
        _row(2, "Where is my parcel?", None, "not in the label set: 'parcel'"),
        _row(3, test_text.upper(), "billing"),  # leaks the held-out test set
        _row(4, "Refund me", "refund"),
        _row(5, "Cancel my plan", "cancellation"),
        _row(6, "Invoice is wrong", "billing"),
    ], test_texts=(test_text,))
    manifest = filter_stage(loaded, RunLayout(tmp_path))
    dropped = {r["id"]: r["drop_reason"] for r in read_rows(tmp_path / "filter" / "dropped.parquet")}
    assert dropped == {"inputs:1": "duplicate", "inputs:2": "invalid", "inputs:3": "leaks_test"}
    train = read_rows(tmp_path / "filter" / "train.parquet")
    evaluation = read_rows(tmp_path / "filter" / "eval.parquet")
    kept = {r["id"] for r in train} | {r["id"] for r in evaluation}
    assert kept == {"inputs:0", "inputs:4", "inputs:5", "inputs:6"}
    assert len(evaluation) == 1
    assert manifest["counts"] == {"rows_in": 7, "rows_kept": 4, "train": 3, "eval": 1}
    assert (tmp_path / "filter" / "manifest.json").exists()
    assert "| duplicate | 1 |" in (tmp_path / "filter" / "report.md").read_text()


def test_filter_refuses_output_missing_columns(tmp_path: Path) -> None:
    inputs = write_csv(tmp_path / "in.csv", [{"text": f"m{i}", "category": "a"} for i in range(20)])
    loaded = load_config(write_config(tmp_path / "c.yaml", study_config("m", inputs)))
    write_rows(tmp_path / "generate" / "outputs.parquet", [{"id": "inputs:0", "text": "x"}])
    write_json(tmp_path / "generate" / "manifest.json", {"stage": "generate"})
    with pytest.raises(UserError, match=r"outputs.parquet: missing column\(s\) \['gold', 'raw', 'label', 'error'"):
        filter_stage(loaded, RunLayout(tmp_path))


def test_filter_needs_a_finished_generate_stage(tmp_path: Path) -> None:
    inputs = write_csv(tmp_path / "in.csv", [{"text": f"m{i}", "category": "a"} for i in range(20)])
    loaded = load_config(write_config(tmp_path / "c.yaml", study_config("m", inputs)))
    with pytest.raises(UserError, match="run `distill generate` first"):
        filter_stage(loaded, RunLayout(tmp_path))


def _stage(tmp_path: Path, rows: list[dict], test_texts: list[str] | None = None, **rules: object):
    """Run the filter stage on hand-made generate outputs; `test_texts` are the held-out queries."""
    test = write_csv(tmp_path / "test.csv", [{"text": t, "category": "billing"}
                                             for t in (test_texts or ["an unrelated held out question"])])
    inputs = write_csv(tmp_path / "in.csv", [{"text": "x", "category": "billing"}])
    config = study_config("m", inputs)
    config["data"] = {"inputs": str(inputs), "test": str(test)}
    config["filter"] = {"eval_fraction": 0.0, **rules}
    if "min_vote_share" in rules:  # a vote share needs several samples per input
        config["teacher"] = {**config["teacher"], "samples": 3, "temperature": 0.7}
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    _generate_output(tmp_path, rows, tuple(test_texts or ["an unrelated held out question"]))
    filter_stage(loaded, RunLayout(tmp_path))
    dropped = {r["id"]: r["drop_reason"] for r in read_rows(tmp_path / "filter" / "dropped.parquet")}
    kept = [r["id"] for r in read_rows(tmp_path / "filter" / "train.parquet")]
    return dropped, kept


def test_near_duplicates_and_near_test_copies_are_dropped(tmp_path: Path) -> None:
    rows = [_row(0, "my card payment was declined at the shop today", "billing"),
            _row(1, "my card payment was declined at the shop today!!", "billing"),
            _row(2, "how long does delivery to canada take please", "shipping"),
            _row(3, "I want to cancel my subscription before the next renewal date", "cancellation")]
    dropped, kept = _stage(tmp_path, rows, ["how long does delivery to canada take"], near_dup_threshold=0.6)
    assert dropped == {"inputs:1": "near_duplicate", "inputs:2": "leaks_test"}
    assert sorted(kept) == ["inputs:0", "inputs:3"]


def test_confidence_vote_and_length_rules(tmp_path: Path) -> None:
    rows = [_row(0, "sure answer about a refund", "refund"), _row(1, "unsure answer about a refund", "refund"),
            _row(2, "ok", "refund"), _row(3, "split vote on this refund question", "refund"),
            _row(4, "a" * 300, "refund")]
    rows[1]["logprob"] = -3.0
    rows[3]["vote_share"] = 0.4
    for row in rows:
        row.setdefault("vote_share", 1.0)
    dropped, kept = _stage(tmp_path, rows, min_logprob=-1.0, min_vote_share=0.5, min_text_chars=5,
                           max_text_chars=200)
    assert dropped == {"inputs:1": "low_confidence", "inputs:2": "too_short", "inputs:3": "low_vote_share",
                       "inputs:4": "too_long"}
    assert kept == ["inputs:0"]


def test_label_cap_keeps_the_most_confident(tmp_path: Path) -> None:
    rows = [_row(i, f"distinct billing question number {i} {'x' * i}", "billing") for i in range(4)]
    rows.append(_row(4, "a single refund question", "refund"))
    for i, row in enumerate(rows):
        row["logprob"] = -0.1 * i
    dropped, kept = _stage(tmp_path, rows, max_per_label=2, near_dup_threshold=None)
    assert dropped == {"inputs:2": "over_label_cap", "inputs:3": "over_label_cap"}
    report = json.loads((tmp_path / "filter" / "report.json").read_text())
    assert report["labels_after"] == {"billing": 2, "refund": 1}


def test_output_from_another_label_set_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"answer 'lost_card' is not valid under the config's task"):
        _stage(tmp_path, [_row(0, "I lost my card", "lost_card")])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a b c", "a b c d", "x y", "z", "p q r s t"]),
                          st.sampled_from(["billing", "refund", None]), st.floats(-5, 0)), max_size=30),
       st.sampled_from([None, 0.5, 0.9]), st.sampled_from([None, 1, 3]))
def test_every_row_is_kept_or_dropped_exactly_once(rows, threshold, cap) -> None:
    data = [{**_row(i, text, label), "logprob": logprob} for i, (text, label, logprob) in enumerate(rows)]
    config = load_config_inline(near_dup_threshold=threshold, max_per_label=cap)
    reasons = drop_reasons(data, config, ["held out"])
    assert len(reasons) == len(data)
    assert all(reason is not None for row, reason in zip(data, reasons, strict=True) if row["label"] is None)
    kept_labels = Counter(row["label"] for row, reason in zip(data, reasons, strict=True) if reason is None)
    assert cap is None or max(kept_labels.values(), default=0) <= cap
    kept_texts = [normalise(row["text"]) for row, reason in zip(data, reasons, strict=True) if reason is None]
    assert len(kept_texts) == len(set(kept_texts)), "no exact duplicate survives"


def load_config_inline(**rules: object):
    from distill.config import Config

    config = study_config("m", DEMO_INPUTS)
    config["filter"] = rules
    return Config.model_validate(config)


@pytest.mark.skipif(not (SHARED_DATA / "banking77").exists(), reason="../shared/data is absent")
def test_banking77_with_injected_duplicates_and_invalid_labels(tmp_path: Path) -> None:
    import csv

    with open(SHARED_DATA / "banking77" / "train.csv", encoding="utf-8") as handle:
        source = list(csv.DictReader(handle))[:3000:10]  # 300 rows across many intents
    rows = [{**_row(i, r["text"], r["category"]), "gold": r["category"]} for i, r in enumerate(source)]
    copies = [{**rows[i], "id": f"inputs:{1000 + i}", "text": "  " + rows[i]["text"].upper()} for i in range(20)]
    invalid = [{**rows[i], "id": f"inputs:{2000 + i}", "text": f"unanswered {i}", "label": None,
                "error": "not in the label set"} for i in range(15)]
    labels = sorted({r["category"] for r in source})
    test = write_csv(tmp_path / "test.csv", [{"text": "held out", "category": labels[0]}])
    config = study_config("m", test, task={"instruction": "x", "labels": labels})
    config["data"] = {"inputs": str(test), "test": str(test)}
    config["filter"] = {"eval_fraction": 0.1, "near_dup_threshold": None}
    _generate_output(tmp_path, rows + copies + invalid)
    manifest = filter_stage(load_config(write_config(tmp_path / "c.yaml", config)), RunLayout(tmp_path))
    drops = manifest["drops"]
    assert drops["invalid"] == 15 and drops["duplicate"] >= 20
    assert manifest["counts"]["rows_in"] == 335
    assert manifest["counts"]["rows_kept"] + sum(drops.values()) == 335
    report = json.loads((tmp_path / "filter" / "report.json").read_text())
    assert report["audit"]["teacher_accuracy"] == 1.0  # these "teacher" labels are the gold ones


def test_label_budgets_are_nested_and_the_rest_is_dropped_with_a_reason(tmp_path: Path) -> None:
    rows = [_row(i, f"distinct billing question number {i} {'x' * i}", "billing") for i in range(20)]
    kept_by_budget = {}
    for budget in (5, 10):
        folder = tmp_path / str(budget)
        folder.mkdir()
        dropped, kept = _stage(folder, rows, max_train_rows=budget)
        assert len(kept) == budget and list(dropped.values()) == ["over_label_budget"] * (20 - budget)
        kept_by_budget[budget] = kept
    assert kept_by_budget[10][:5] == kept_by_budget[5]  # the smaller budget is a prefix of the larger


def test_min_logprob_reads_a_label_whole_and_other_answers_per_token() -> None:
    """A 40-token JSON answer at -0.05 a token is sure of every token; its sum, -2.0, would drop it. A label is
    read whole: its log-probability is the label's probability, however many tokens it takes."""
    from distill.config import FilterConfig
    from distill.filter.screen import row_reason

    rules = FilterConfig(min_logprob=-1.0)
    long_json = _row(0, "book a table for two", "{}") | {"logprob": -2.0, "completion_tokens": 40}
    assert row_reason(long_json, rules, per_label=False) is None
    assert row_reason(long_json | {"completion_tokens": 1}, rules, per_label=False) == "low_confidence"
    # Three samples' tokens are counted together: 120 tokens are 40 per answer.
    voted = long_json | {"completion_tokens": 120, "samples": json.dumps(["{}", "{}", "{}"])}
    assert row_reason(voted, rules, per_label=False) is None
    label = _row(1, "topping up failed", "topping_up_by_card") | {"logprob": -2.0, "completion_tokens": 6}
    assert row_reason(label, rules, per_label=True) == "low_confidence"


def test_a_killed_filters_scratch_and_half_written_outputs_are_removed_by_the_next(tmp_path: Path) -> None:
    folder = tmp_path / "filter"
    (folder / ".scratch-killed").mkdir(parents=True)
    (folder / ".scratch-killed" / "bucket-0.parquet").write_bytes(b"x" * 1000)
    (folder / ".train.parquet.a1b2.tmp").write_bytes(b"half a file")
    dropped, kept = _stage(tmp_path, [_row(0, "my card payment was declined", "billing")])
    assert kept == ["inputs:0"] and not dropped
    assert not list(folder.glob(".*")), "nothing hidden is left in filter/"
