"""Rows are identified by content (a hash of the text, or `data.id_column`), so new-row counting, the splits and
`trained_ids.json` follow the rows wherever they move in a file."""

from pathlib import Path

import pytest

from distill.artifacts import write_json, write_rows
from distill.config import load_config
from distill.data.inputs import load_examples, split_inputs
from distill.data.readers import DataError
from distill.layout import RunLayout
from distill.pipeline import _new_training_rows
from helpers import split_train_eval, study_config, write_config, write_csv

ROWS = [{"text": f"message {i} about my order", "category": "billing"} for i in range(60)]


def _examples(tmp_path: Path, rows: list[dict], **data: object):
    inputs = write_csv(tmp_path / "in.csv", rows)
    config = study_config("m", inputs)
    config["data"].update(data)
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    return loaded, load_examples(inputs, loaded.data)


def _ids(tmp_path: Path, rows: list[dict]) -> list[str]:
    return [e.id for e in _examples(tmp_path, rows)[1]]


def test_a_rolling_window_counts_its_new_rows_and_an_inserted_row_is_one_new_row(tmp_path: Path) -> None:
    first = _ids(tmp_path, ROWS[:40])
    before = set(first)
    assert sum(i not in before for i in _ids(tmp_path, ROWS[5:45])) == 5  # same length, 5 rows in, 5 out
    inserted = _ids(tmp_path, [{"text": "a brand new first row", "category": "refund"}, *ROWS[:40]])
    assert inserted[1:] == first, "every old row keeps its id"
    assert sum(i not in before for i in inserted) == 1


def test_new_training_rows_are_counted_by_content(tmp_path: Path) -> None:
    """What `distill run` compares with student.retrain_min_new_rows: the filter's train rows against the ids
    the current student was trained on."""
    layout = RunLayout(tmp_path / "run")
    old = load_examples(write_csv(tmp_path / "old.csv", ROWS[:40]), _examples(tmp_path, ROWS)[0].data)
    new = load_examples(write_csv(tmp_path / "new.csv", ROWS[5:45]), _examples(tmp_path, ROWS)[0].data)
    write_json(layout.train.trained_ids, [e.id for e in old])
    write_rows(layout.filter.train, [{"id": e.id, "text": e.text} for e in new])
    assert _new_training_rows(layout) == 5


def test_repeated_texts_stay_distinct_rows(tmp_path: Path) -> None:
    ids = _ids(tmp_path, [ROWS[0], ROWS[1], ROWS[0], ROWS[0]])
    assert len(set(ids)) == 4 and ids[2] == f"{ids[0]}.2" and ids[3] == f"{ids[0]}.3"


def test_an_id_column_names_the_rows_and_must_be_unique(tmp_path: Path) -> None:
    rows = [{"ticket": f"T-{i}", **row} for i, row in enumerate(ROWS[:5])]
    _, examples = _examples(tmp_path, rows, id_column="ticket")
    assert [e.id for e in examples] == ["T-0", "T-1", "T-2", "T-3", "T-4"]
    rows[3]["ticket"] = "T-1"
    rows[4]["ticket"] = ""
    with pytest.raises(DataError) as caught:
        _examples(tmp_path, rows, id_column="ticket")
    assert [p.split("in.csv: ")[1] for p in caught.value.problems] == [
        "row 4 (line 5), column 'ticket': id 'T-1' repeats row 2; ids must be unique",
        "row 5 (line 6), column 'ticket': empty id (data.id_column); give every row an id"]


def test_splits_follow_content_when_a_row_is_inserted_at_the_top(tmp_path: Path) -> None:
    config, _ = _examples(tmp_path, ROWS, test_size=10)
    first = split_inputs(config)
    config, _ = _examples(tmp_path, [{"text": "a brand new first row", "category": "refund"}, *ROWS], test_size=10)
    second = split_inputs(config)
    moved = {e.id for e in first.test} ^ {e.id for e in second.test}
    assert len(moved) <= 2, "at most the new row enters the test split and one old row leaves it"
    rows = [{"id": e.id, "text": e.text} for e in first.to_label]
    train, evaluation = split_train_eval(rows, 0.2, seed=0)
    _, evaluation_after = split_train_eval([{"id": "new", "text": "new"}, *rows], 0.2, seed=0)
    assert len({r["id"] for r in evaluation} ^ {r["id"] for r in evaluation_after}) <= 2


def test_a_study_never_keeps_a_student_trained_on_other_rows(tmp_path: Path) -> None:
    """With student.retrain_min_new_rows, `distill run` keeps the current student while few rows are new; a
    study's variant or curve point whose filter now keeps fewer rows has none new, yet must train on its own."""
    from distill.pipeline import decide, get_stage
    from distill.stages import MANIFEST, config_key

    config = study_config("m", write_csv(tmp_path / "in.csv", ROWS))
    config["student"]["retrain_min_new_rows"] = 5
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    layout = RunLayout(tmp_path / "run")
    train = get_stage("train")
    write_json(layout.train.trained_ids, [f"row{i}" for i in range(40)])
    write_rows(layout.filter.train, [{"id": f"row{i}", "text": "t"} for i in range(20)])  # a tighter filter
    write_json(layout.train.folder / MANIFEST, {"key": "trained on the old rows", "outputs": {},
                                                "config_key": config_key(train, loaded)})
    assert decide(train, loaded, layout, forced=False)[0] == "kept"
    assert decide(train, loaded, layout, forced=False, may_keep=False)[0] == "run"
