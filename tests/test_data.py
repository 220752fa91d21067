"""Data read as it is written: columns, encodings, quoting, JSON gold, row counts, and the split."""

import hashlib
import json
from pathlib import Path

import pytest

from distill.config import load_config
from distill.data.inputs import load_examples, split_inputs
from distill.data.readers import DataError, read_table
from distill.errors import UserError
from distill.tasks import make_task
from helpers import DEMO_INPUTS, SHARED_DATA, study_config, write_config, write_csv

SMS = SHARED_DATA / "sms_spam" / "SMSSpamCollection"


def _config(tmp_path: Path, inputs: Path, task: dict | None = None, **data: object):
    config = study_config("m", inputs, **({"task": task} if task else {}))
    if "test" in data:  # test_size holds rows out of the inputs only where there is no test file
        del config["data"]["test_size"]
    config["data"].update(data)
    return load_config(write_config(tmp_path / "c.yaml", config))


def test_missing_text_column_names_file_and_columns(tmp_path: Path) -> None:
    inputs = write_csv(tmp_path / "in.csv", [{"body": "hi", "category": "billing"}])
    config = _config(tmp_path, inputs)
    with pytest.raises(UserError, match=r"in.csv: no column 'text' \(data.text_column\).*\['body', 'category'\]"):
        load_examples(inputs, config.data)


def test_every_bad_row_is_named_with_its_line_and_column_at_once(tmp_path: Path) -> None:
    inputs = write_csv(tmp_path / "in.csv", [{"text": "fine", "category": "billing"},
                                             {"text": "  ", "category": "refund"},
                                             {"text": "ok", "category": "not-a-label"}])
    config = _config(tmp_path, inputs)
    with pytest.raises(DataError) as caught:
        load_examples(inputs, config.data, make_task(config.task).parse_gold)
    problems = caught.value.problems
    assert problems[0] == f"{inputs}: row 2 (line 3), column 'text': empty or missing text; fix or remove that row"
    assert problems[1].startswith(f"{inputs}: row 3 (line 4), column 'category': gold answer 'not-a-label'")
    assert len(problems) == 2


def test_non_utf8_error_gives_the_true_line_and_byte(tmp_path: Path) -> None:
    # Far past the first block a streaming decoder reads, and after a BOM: both used to shift the offset.
    body = "".join(f"message number {i},billing\n" for i in range(5000))
    data = b"\xef\xbb\xbf" + f"text,category\n{body}".encode() + "caf\xe9,billing\n".encode("latin-1")
    inputs = tmp_path / "latin1.csv"
    inputs.write_bytes(data)
    offset = data.index(b"\xe9")
    config = _config(tmp_path, inputs)
    with pytest.raises(UserError, match=rf"latin1.csv: line 5002, byte {offset} \(column 4\): not UTF-8 text "
                                        r"\(byte 0xe9\)"):
        load_examples(inputs, config.data)


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    inputs = tmp_path / "bom.csv"
    inputs.write_bytes(b"\xef\xbb\xbftext,category\nwhere is my parcel,shipping\n")
    [example] = load_examples(inputs, _config(tmp_path, inputs).data)
    assert example.text == "where is my parcel" and example.gold == "shipping"


def test_jsonl_bad_lines_are_named_with_line_and_column(tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "ok", "category": "billing"}\n{oops\n["a list"]\n')
    config = _config(tmp_path, inputs)
    with pytest.raises(DataError) as caught:
        load_examples(inputs, config.data)
    assert caught.value.problems == [
        f"{inputs}: line 2, column 2: not valid JSON (Expecting property name enclosed in double quotes)",
        f"{inputs}: line 3: a JSON object per line is expected, not list"]


def test_tsv_quote_marks_are_plain_text(tmp_path: Path) -> None:
    # Read with CSV quoting, the quote opening row 1's text swallows the next line into it.
    inputs = tmp_path / "sms.tsv"
    inputs.write_text('ham\t"Hi" she said, "see you\nspam\tWIN a prize now\nham\tok "fine"\n')
    config = _config(tmp_path, inputs, header=["category", "text"], gold_column="category",
                     task={"instruction": "x", "labels": ["ham", "spam"]})
    examples = load_examples(inputs, config.data, str)
    assert [e.text for e in examples] == ['"Hi" she said, "see you', "WIN a prize now", 'ok "fine"']


def test_tsv_line_with_an_extra_tab_is_named(tmp_path: Path) -> None:
    inputs = tmp_path / "in.tsv"
    inputs.write_text("text\tcategory\nfine\tbilling\na\ttab inside\trefund\n")
    with pytest.raises(DataError, match=r"in.tsv: line 3: 3 fields where the header has 2 \(text, category\); "
                                        "a field holding a tab must be quoted"):
        read_table(inputs)


def test_a_stray_quote_in_a_quoted_file_is_pointed_out(tmp_path: Path) -> None:
    inputs = tmp_path / "in.tsv"
    inputs.write_text('ham\t"Hi there\nspam\tWIN now\nham\tbye"\n')
    table = read_table(inputs, header=["category", "text"], quoting="csv")
    assert len(table.rows) == 1
    assert table.notes == [f"{inputs}: row 1 (line 1), column 'text' holds a line break followed by what reads as "
                           "a whole row (1 rows from 3 lines): a stray quote mark? If quote marks in this file are "
                           "plain text, set data.quoting: none"]


def test_the_shipped_sms_spam_file_gives_one_row_per_line() -> None:
    if not SMS.exists():
        pytest.skip("../shared/data is absent")
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "sms_spam.yaml")
    examples = load_examples(SMS, config.data)
    lines = SMS.read_text(encoding="utf-8").splitlines()
    assert len(examples) == len(lines) == 5574
    assert [e.text for e in examples] == [line.split("\t", 1)[1].strip() for line in lines]
    assert sum('"' in e.text for e in examples) == sum('"' in line for line in lines)


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                                           "address": {"type": "object", "properties": {"zip": {"type": "string"}}}}}
EXTRACTION = {"type": "extraction", "instruction": "Parse the address.", "json_schema": SCHEMA}


def test_gold_stored_as_json_objects_stays_json(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    gold = [{"address": {"zip": "02139"}, "city": "Cambridge"}, {"city": "Austin"}, {}]
    texts = ["1 Main St, Cambridge 02139", "Austin, TX", "no address here"]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "gold": g}) + "\n" for t, g in zip(texts, gold, strict=True)))
    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": texts[0], "gold": gold[0]}]), parquet)
    config = _config(tmp_path, jsonl, task=EXTRACTION, gold_column="gold", test_size=1)
    canonical = make_task(config.task).parse_gold
    assert [e.gold for e in load_examples(jsonl, config.data, canonical)] == [
        '{"city":"Cambridge","address":{"zip":"02139"}}', '{"city":"Austin"}', "{}"]
    [row] = load_examples(parquet, config.data, canonical)
    assert row.gold == '{"city":"Cambridge","address":{"zip":"02139"}}'


def test_max_test_beyond_the_test_rows_is_an_error(tmp_path: Path) -> None:
    test = write_csv(tmp_path / "test.csv", [{"text": f"t{i}", "category": "billing"} for i in range(5)])
    config = _config(tmp_path, DEMO_INPUTS, test=str(test), max_test=6)
    with pytest.raises(UserError, match=rf"data.max_test=6, but {test} has 5 rows: lower data.max_test"):
        split_inputs(config)
    config = _config(tmp_path, DEMO_INPUTS, test_size=10, max_test=11)
    with pytest.raises(UserError, match="data.max_test=11, but data.test_size=10 rows held out of"):
        split_inputs(config)
    assert len(split_inputs(_config(tmp_path, DEMO_INPUTS, test=str(test), max_test=5)).test) == 5


def test_split_is_deterministic_disjoint_and_complete(tmp_path: Path) -> None:
    config = _config(tmp_path, DEMO_INPUTS, max_inputs=None, test_size=30)
    first, second = split_inputs(config), split_inputs(config)
    assert first == second
    label_ids = {e.id for e in first.to_label}
    test_ids = {e.id for e in first.test}
    assert len(test_ids) == 30 and not label_ids & test_ids
    assert len(label_ids | test_ids) == len(load_examples(DEMO_INPUTS, config.data))


def test_split_is_the_seeded_hash_order_with_repeats_numbered(tmp_path: Path) -> None:
    """The split streams the file, yet its order is still every row sorted by a hash of seed and text (ties in
    file order), and a repeated text's second occurrence is still id ".2"."""
    texts = [f"message {i % 45}" for i in range(120)]  # each text two or three times
    inputs = write_csv(tmp_path / "in.csv", [{"text": t, "category": "billing"} for t in texts])
    config = _config(tmp_path, inputs, max_inputs=None, test_size=10, seed=3)
    splits = split_inputs(config)
    order = sorted(range(len(texts)), key=lambda i: hashlib.sha256(f"3:{texts[i]}".encode()).digest())
    assert [e.row for e in [*splits.test, *splits.to_label]] == [i + 1 for i in order]
    ids = {e.row: e.id for e in load_examples(inputs, config.data)}
    assert [e.id for e in splits.to_label] == [ids[e.row] for e in splits.to_label]
    assert any(e.id.endswith(".2") for e in [*splits.test, *splits.to_label])
    assert splits.to_label[2:5] == list(splits.to_label)[2:5] and splits.to_label[-1] == list(splits.to_label)[-1]


def test_streamed_split_names_file_row_line_and_column(tmp_path: Path) -> None:
    inputs = tmp_path / "in.csv"
    inputs.write_text("text,category\nfine,billing\n,refund\n\"two\nlines\",billing\n  ,refund\n")
    with pytest.raises(DataError) as caught:
        split_inputs(_config(tmp_path, inputs, test_size=1))
    assert caught.value.problems == [f"{inputs}: 2 rows (row 2 (line 3), row 4 (line 6)): column 'text': empty or "
                                     "missing text; fix or remove that row"]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "a"}\n{"text": \n[1]\n')
    with pytest.raises(DataError, match=r"in.jsonl: line 2, column 10: not valid JSON.*\n.*in.jsonl: line 3: a "
                                        "JSON object per line is expected, not list"):
        split_inputs(_config(tmp_path, jsonl, test_size=1))


def test_truncation_happens_after_shuffling(tmp_path: Path) -> None:
    """BANKING77's train.csv is sorted by label: the first rows alone would cover only a few labels."""
    if not (SHARED_DATA / "banking77").exists():
        pytest.skip("../shared/data is absent")
    config = study_config("m", SHARED_DATA / "banking77" / "train.csv",
                          task={"instruction": "x", "labels_file": str(SHARED_DATA / "banking77" / "categories.json")})
    config["data"].update(max_inputs=300, test_size=50)
    config = load_config(write_config(tmp_path / "c.yaml", config))
    labels = {e.gold for e in split_inputs(config).to_label}
    assert len(labels) > 60


def test_jsonl_strings_may_hold_line_separator_characters(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    texts = ["first\u2028still the first", "second\x85row", "third"]
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert [row["text"] for row in read_table(path).rows] == texts
