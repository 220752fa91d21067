"""Task types on hand-made answers whose right scores are known; their config errors; the Restaurant-8k reader."""

import json
from pathlib import Path

import pytest

from distill.config import load_config
from distill.data.inputs import split_inputs
from distill.data.readers import restaurant8k
from distill.errors import UserError
from distill.stats import multilabel_report
from distill.tasks import make_task
from distill.tasks.classification import ClassificationSettings
from distill.tasks.extraction import ExtractionSettings
from distill.tasks.generation import GenerationSettings
from helpers import DEMO_INPUTS, study_config, write_config

SCHEMA = {"type": "object", "properties": {"date": {"type": ["string", "null"]}, "people": {"type": "integer"}}}


def _extraction():
    return make_task(ExtractionSettings(type="extraction", instruction="Extract.", json_schema=SCHEMA))


def test_multi_label_answers_are_canonical_and_scored_as_sets() -> None:
    task = make_task(ClassificationSettings(instruction="Tag.", labels=["a", "b", "c"], multi_label=True))
    assert task.parse('["c","a","a"]').value == '["a", "c"]'
    assert task.parse('["a","z"]').error == "not in the label set: 'z'"
    assert task.parse('"a"').error == "not a JSON list of labels"
    assert task.parse_gold("c | a") == '["a", "c"]'
    assert task.score('["a", "c"]', '["a", "c"]') == 1 and task.score('["a"]', '["a", "c"]') == 0
    assert task.categories('["a", "c"]') == ["a", "c"]


def test_multilabel_report_on_known_counts() -> None:
    # a: tp 2; b: tp 0, fn 1, fp 1; c: fn 1 -> micro P = 2/3, R = 2/4, F1 = 4/7.
    report = multilabel_report([["a"], ["a", "b"], None], [["a", "c"], ["a"], ["b"]], ["a", "b", "c"])
    assert report["micro_f1"] == pytest.approx(4 / 7)
    assert report["per_class"]["a"]["f1"] == 1.0 and report["per_class"]["b"]["f1"] == 0.0


def test_extraction_validates_against_the_schema_and_canonicalises() -> None:
    task = _extraction()
    assert task.parse('{"people": 4, "date": "today"}').value == '{"date":"today","people":4}'
    assert task.parse('{"date": null, "people": 2}').value == '{"people":2}'  # null means "not in the text"
    assert task.parse('{"people": "four"}').error.startswith("against the schema at people:")
    assert task.parse('{"date": ').error.startswith("not valid JSON")
    assert task.parse_gold("{}") == "{}"


def test_extraction_per_field_accuracy_and_empty_objects() -> None:
    task = _extraction()
    gold = ['{"date":"Friday","people":2}', '{"people":3}', "{}", "{}"]
    predictions = ['{"date":"friday ","people":2}', '{"date":"Monday","people":3}', "{}", None]
    assert [task.score(p, g) for p, g in zip(predictions, gold, strict=True)] == [1, 0, 1, 0]
    details = task.details(predictions, gold)
    assert details["per_field"] == {"date": 0.5, "people": 0.75}
    assert details["empty_gold_rows"] == 2 and details["empty_answered_empty"] == 0.5
    assert task.agree(predictions[0], gold[0]) == 1 and task.agree(None, None) == 0


def test_generation_format_and_rouge() -> None:
    task = make_task(GenerationSettings(type="generation", instruction="Summarise.",
                                        format_regex=r"Issue: [^\n]+\nAction: (refund|replace|none)"))
    assert task.parse("Issue: card broken\nAction: replace\n").value == "Issue: card broken\nAction: replace"
    assert task.parse("card broken, replace it").error.startswith("does not match task.format_regex")
    # ROUGE-L of "the cat sat" against "the cat": precision 2/3, recall 1, F1 0.8.
    assert task.score("the cat sat", "the cat") == pytest.approx(0.8)
    assert task.score(None, "the cat") == 0 and task.agree("a b", "a b") == 1
    assert task.details(["the cat sat", None], ["the cat", "x"])["rougeL"] == pytest.approx(0.4)
    assert task.teacher_constraint() == {"regex": task.settings.format_regex}


def test_generation_without_format_is_free_text() -> None:
    task = make_task(GenerationSettings(type="generation", instruction="Summarise."))
    assert task.teacher_constraint() is None and task.parse("  anything  ").value == "anything"
    assert task.parse(" ").error == "no output"


@pytest.mark.parametrize(("task", "message"), [
    ({"type": "ranking", "instruction": "x"}, "task: unknown task type; give `type` as one of 'classification'"),
    ({"type": "extraction", "instruction": "x", "json_schema": {"type": "string"}},
     "task: the schema must describe an object with `properties`"),
    ({"type": "extraction", "instruction": "x", "json_schema": {"type": "object", "properties": {"a": {"type": 3}}}},
     "task: not a valid JSON schema"),
    ({"type": "generation", "instruction": "x", "format_regex": "^Summary: .+$"}, "task.format_regex: .*leave out"),
    ({"type": "generation", "instruction": "x", "format_regx": "a"}, "task.format_regx: unknown key"),
])
def test_task_config_errors_name_the_key(tmp_path: Path, task: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_config(write_config(tmp_path / "c.yaml", study_config("m", DEMO_INPUTS, task=task)))


def test_options_a_task_type_lacks_are_refused(tmp_path: Path) -> None:
    config = study_config("m", DEMO_INPUTS, task={"type": "extraction", "instruction": "x", "json_schema": SCHEMA})
    config["teacher"]["rationale"] = True
    config["filter"]["max_per_label"] = 5
    with pytest.raises(UserError, match="teacher.rationale: a extraction task has no rationale option"):
        load_config(write_config(tmp_path / "c.yaml", config))


def test_bad_gold_names_file_and_row(tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"text": "table for 2", "gold": '{"people": 2}'}) + "\n"
                      + json.dumps({"text": "table for two", "gold": '{"people": "two"}'}) + "\n")
    config = study_config("m", inputs, task={"type": "extraction", "instruction": "x", "json_schema": SCHEMA})
    config["data"].update(gold_column="gold", test_size=1)
    with pytest.raises(UserError, match=r"in.jsonl: row 2 \(line 2\), column 'gold': gold answer .* against the "
                                        "schema at people"):
        split_inputs(load_config(write_config(tmp_path / "c.yaml", config)))

    inputs.write_text(json.dumps({"text": "table for 2", "gold": '{"people": 2}'}) + "\n"
                      + json.dumps({"text": "table for two", "gold": ""}) + "\n")
    splits = split_inputs(load_config(write_config(tmp_path / "c.yaml", config)))
    golds = {e.text: e.gold for e in splits.test + splits.to_label}
    assert golds == {"table for 2": '{"people":2}', "table for two": None}, "an empty cell is no gold, not bad gold"


def test_restaurant8k_gold_from_spans(tmp_path: Path) -> None:
    path = tmp_path / "r8k.json"
    path.write_text(json.dumps([
        {"userInput": {"text": "Table for 4 at 7pm, name is Ann Lee"}, "context": {},
         "labels": [{"slot": "people", "valueSpan": {"startIndex": 10, "endIndex": 11}},
                    {"slot": "time", "valueSpan": {"startIndex": 15, "endIndex": 18}},
                    {"slot": "first_name", "valueSpan": {"startIndex": 28, "endIndex": 31}}]},
        {"userInput": {"text": "13"}, "context": {"requestedSlots": ["time"]},
         "labels": [{"slot": "time", "valueSpan": {"endIndex": 2}}]},
        {"userInput": {"text": "Thanks!"}},
    ]))
    rows = restaurant8k(path)
    assert rows[0]["gold"] == {"people": "4", "time": "7pm", "first_name": "Ann"}  # an object, as in the file
    assert rows[1] == {"text": "[asked for: time] 13", "gold": {"time": "13"}}
    assert rows[2]["gold"] == {}
    path.write_text(json.dumps([{"userInput": {}}]))
    with pytest.raises(UserError, match=r"r8k.json: turn 1: not in Restaurant-8k's shape"):
        restaurant8k(path)


def test_a_jsonl_file_with_object_gold_runs_through_split_and_the_filter_audit(tmp_path: Path) -> None:
    """US-address parsing as a new user writes it: gold is a nested JSON object in each JSONL line."""
    from distill.filter.report import Audit

    schema = {"type": "object", "properties": {
        "street": {"type": "string"}, "city": {"type": "string"},
        "region": {"type": "object", "properties": {"state": {"type": "string"}, "zip": {"type": "string"}}}}}
    places = [("Cambridge", "MA", "02139"), ("Austin", "TX", "73301"), ("Denver", "CO", "80202")]
    rows = [{"text": f"{n} Main St, {city}, {state} {zip_}",
             "gold": {"street": f"{n} Main St", "city": city, "region": {"state": state, "zip": zip_}}}
            for n in range(1, 9) for city, state, zip_ in places]
    inputs = tmp_path / "addresses.jsonl"
    inputs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = study_config("m", inputs, task={"type": "extraction", "instruction": "Parse the address.",
                                             "json_schema": schema})
    config["data"].update(gold_column="gold", test_size=4)
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    splits = split_inputs(loaded)
    task = make_task(loaded.task)
    assert len(splits.to_label) == 20 and all(task.parse(e.gold).value == e.gold for e in splits.to_label)
    # A teacher that gets every city right and every zip of Austin wrong.
    labelled = []
    for e in splits.to_label:
        answer = json.loads(e.gold)
        if answer["city"] == "Austin":
            answer["region"]["zip"] = "00000"
        labelled.append({"id": e.id, "text": e.text, "gold": e.gold, "label": task.parse(json.dumps(answer)).value})
    tally = Audit(task)
    tally.see(labelled)
    report = tally.result(3, 0)
    austin = sum(json.loads(e.gold)["city"] == "Austin" for e in splits.to_label)
    assert report["rows_with_gold"] == 20
    assert report["teacher_accuracy"] == pytest.approx(1 - austin / 20)
    assert report["per_field"]["city"] == 1.0 and report["per_field"]["region"] == pytest.approx(1 - austin / 20)


def test_a_free_text_answer_is_read_as_a_person_reads_it() -> None:
    task = make_task(ClassificationSettings(instruction="x", labels=["card_delivery_estimate", "card_arrival",
                                                                      "top-up", "top_up", "Refund"]))
    assert task.parse("Card delivery estimate.").value == "card_delivery_estimate"
    assert task.parse('"card arrival"').value == "card_arrival"
    assert task.parse("refund!").value == "Refund"
    both = task.parse("Top up")
    assert both.value is None and "matches several labels (top-up, top_up)" in both.error
    assert task.parse("card delivery").error == "not in the label set: 'card delivery'"
