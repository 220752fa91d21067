"""The filter's grounding check: an extracted value must occur in its input (real Restaurant-8k rows), exempt fields
are configurable and validated, and a generation answer's unsupported names and numbers are counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.artifacts import read_rows, write_json, write_rows
from distill.cli import app
from distill.config import load_config
from distill.errors import UserError
from distill.filter.stage import filter_stage
from distill.layout import RunLayout
from distill.tasks.extraction import json_grammar
from distill.tasks.grounding import FieldRules, Source, unsupported_tokens
from helpers import SHARED_DATA, study_config, write_config
from teacher.rows import TEACHER_COLUMNS, TEST_COLUMNS

RESTAURANT8K = SHARED_DATA / "restaurant8k" / "train_0.json"
needs_data = pytest.mark.skipif(not RESTAURANT8K.exists(), reason="../shared/data is absent")
FIELDS = ("date", "time", "people", "first_name", "last_name")
SCHEMA = {"type": "object", "additionalProperties": False,
          "properties": {f: {"type": ["string", "null"]} for f in FIELDS}}


def _real_rows(count: int) -> list[dict]:
    """The first Restaurant-8k turns that give a time and a full name, as the reader builds them."""
    from distill.data.readers import restaurant8k

    rows = [r for r in restaurant8k(RESTAURANT8K) if {"time", "first_name", "last_name"} <= set(r["gold"])]
    return rows[:count]


def _teacher_row(i: int, text: str, answer: dict, gold: dict | None) -> dict:
    label = json.dumps({k: answer[k] for k in FIELDS if answer.get(k) is not None}, separators=(",", ":"))
    canonical_gold = None if gold is None else json.dumps({f: gold[f] for f in FIELDS if f in gold},
                                                          separators=(",", ":"))
    return {"id": f"inputs:{i}", "text": text, "gold": canonical_gold, "raw": label, "label": label,
            "error": None, "rationale": None, "vote_share": None, "samples": "[]", "logprob": -0.1,
            "top_logprobs": "[]", "prompt_tokens": 10, "completion_tokens": 2, "cached_tokens": 0, "latency_ms": 5.0,
            "finish_reason": "stop", "serving_s": 0.01}


def _filter(tmp_path: Path, rows: list[dict], task: dict | None = None, **rules: object):
    """Run the filter stage on these teacher rows under an extraction config with `rules` in `filter`."""
    layout = RunLayout(tmp_path)
    write_rows(layout.generate.outputs, rows, TEACHER_COLUMNS)
    write_rows(layout.generate.test, [{"id": "test:0", "text": "a held out question", "gold": None}], TEST_COLUMNS)
    write_json(layout.manifest("generate"), {"stage": "generate"})
    config = study_config("m", tmp_path / "unused.csv", task=task or {
        "type": "extraction", "instruction": "Extract the booking.", "json_schema": SCHEMA})
    config["data"] = {"inputs": str(tmp_path / "c.yaml"), "test": str(tmp_path / "c.yaml")}
    config["filter"] = {"eval_fraction": 0.0, "near_dup_threshold": None, **rules}
    write_config(tmp_path / "c.yaml", config)
    filter_stage(load_config(tmp_path / "c.yaml"), layout)
    dropped = {r["id"]: r for r in read_rows(layout.filter.dropped)}
    kept = {r["id"]: r for r in read_rows(layout.filter.train)}
    return dropped, kept, json.loads(layout.filter.report_json.read_text())


@needs_data
def test_an_invented_value_is_dropped_with_its_field_named(tmp_path: Path) -> None:
    real = _real_rows(6)
    rows = [_teacher_row(i, r["text"], r["gold"], r["gold"]) for i, r in enumerate(real)]
    invented = {**real[0]["gold"], "last_name": "Smith"}  # a surname the message never gives
    rows.append(_teacher_row(6, real[0]["text"] + " Thanks.", invented, real[0]["gold"]))
    dropped, kept, report = _filter(tmp_path, rows)
    assert set(kept) == {f"inputs:{i}" for i in range(6)}, "the teacher's copied values are all grounded"
    assert dropped["inputs:6"]["drop_reason"] == "ungrounded"
    assert json.loads(dropped["inputs:6"]["grounding"]) == [{"field": "last_name", "value": "Smith"}]
    part = report["grounding"]
    assert part["per_field"]["last_name"]["values"] == 1
    assert part["per_field"]["last_name"]["examples"][0]["value"] == "Smith"
    assert part["gold"]["supported"]["quality"] == 1.0 and part["gold"]["unsupported"]["quality"] == 0.0
    assert part["gold"]["supported"]["ci"][0] > 0.5, "an exact interval comes with the rate"
    markdown = (tmp_path / "filter" / "report.md").read_text()
    assert "| last_name | 1 |" in markdown and "| ungrounded | 1 |" in markdown
    assert "occurs in its input as whole tokens" in (tmp_path / "filter" / "README.md").read_text()


@needs_data
def test_an_exempt_field_is_kept_and_grounding_can_be_turned_off(tmp_path: Path) -> None:
    real = _real_rows(1)[0]
    normalised_date = {**real["gold"], "date": "2026-05-01"}  # "next Friday" turned into a date on purpose
    rows = [_teacher_row(0, real["text"], normalised_date, real["gold"])]
    (tmp_path / "listed").mkdir()
    dropped, kept, _ = _filter(tmp_path / "listed", rows, ungrounded_fields=["date"])
    assert list(kept) == ["inputs:0"] and not dropped
    annotated = {**SCHEMA, "properties": {**SCHEMA["properties"], "date": {"type": ["string", "null"],
                                                                          "x-grounded": False}}}
    (tmp_path / "annotated").mkdir()
    dropped, kept, _ = _filter(tmp_path / "annotated", rows, task={
        "type": "extraction", "instruction": "Extract.", "json_schema": annotated})
    assert list(kept) == ["inputs:0"]
    (tmp_path / "off").mkdir()
    dropped, kept, report = _filter(tmp_path / "off", rows, grounding=False)
    assert list(kept) == ["inputs:0"]
    assert report["grounding"]["rows_unsupported"] == 1, "with the rule off the report still shows the finding"


@needs_data
def test_a_row_with_every_field_null_is_kept(tmp_path: Path) -> None:
    real = _real_rows(1)[0]
    dropped, kept, report = _filter(tmp_path, [_teacher_row(0, real["text"], dict.fromkeys(FIELDS), None)])
    assert list(kept) == ["inputs:0"] and report["grounding"]["rows_unsupported"] == 0


@needs_data
def test_case_unicode_and_punctuation_variants_are_grounded_but_a_letter_inside_a_word_is_not() -> None:
    real = next(r for r in _real_rows(40) if r["gold"]["first_name"] == "Kristy")
    text = real["text"]  # "Kristy Eheler has a booking  for a table at 8:30pm tomorrow"
    rules = FieldRules(SCHEMA)
    variants = {"first_name": "KRISTY", "last_name": "Éheler,", "time": "８:30pm", "date": "tomorrow."}
    assert rules.ungrounded(variants, text) == []
    assert rules.ungrounded({"first_name": "K"}, text)[0].field == "first_name", "K only occurs inside Kristy"
    assert rules.ungrounded({"time": "8:30"}, text), "8:30 is part of the token 8:30pm"
    assert rules.ungrounded({"last_name": "Eheler"}, text.replace("Eheler", "E\u0301heler")) == []
    assert rules.ungrounded({"first_name": "o'brien"}, "Table for O\u2019Brien") == []


def test_nested_objects_lists_and_enums() -> None:
    schema = {"type": "object", "properties": {
        "guests": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "diet": {"type": "string", "enum": ["vegan", "none"]}}}},
        "venue": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"city": {"type": "string"}}}]},
        "tags": {"type": "array", "items": {"type": "string"}}, "party": {"type": "integer"}}}
    text = "Table for Ana and Bo in Nashville, both vegetarian; party of 2"
    answer = {"guests": [{"name": "Ana", "diet": "vegan"}, {"name": "Cy", "diet": "none"}],
              "venue": {"city": "N"}, "tags": ["vegetarian", "late"], "party": 3}
    found = {(f.field, f.value) for f in FieldRules(schema).ungrounded(answer, text)}
    assert found == {("guests.name", "Cy"), ("venue.city", "N"), ("tags", "late")}, "enums and numbers exempt"
    assert not FieldRules(schema, ("guests", "venue.city", "tags")).ungrounded(answer, text)


def test_near_matches_for_noisy_text_with_rapidfuzz() -> None:
    assert not Source("Reservaton for Jonh Smiht at 7pm").contains("John Smith")
    assert Source("Reservaton for Jonh Smiht at 7pm", min_similarity=0.75).contains("John Smith")
    assert not Source("Reservaton for Jonh Smiht at 7pm", min_similarity=0.75).contains("Mary Jones")


def test_the_schema_annotation_is_accepted_by_the_grammar() -> None:
    annotated = {"type": "object", "properties": {"date": {"type": ["string", "null"], "x-grounded": False}}}
    assert "date" in json_grammar(annotated, (", ", ": "))


def test_a_listed_field_not_in_the_schema_is_named_by_validate(tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"text": f"table for {i}", "gold": {"people": str(i)}}) + "\n"
                              for i in range(30)))
    config = study_config("m", inputs, task={"type": "extraction", "instruction": "x", "json_schema": SCHEMA})
    config["data"] = {"inputs": str(inputs), "gold_column": "gold", "test_size": 5}
    config["filter"] = {"ungrounded_fields": ["dates"]}
    result = CliRunner().invoke(app, ["validate", "-c", str(write_config(tmp_path / "c.yaml", config))])
    assert result.exit_code == 1
    assert "filter.ungrounded_fields: ['dates'] not a field" in result.output and "date, first_name" in result.output
    config["filter"] = {"max_unsupported": 2}
    with pytest.raises(UserError, match="max_unsupported .* generation tasks only"):
        load_config(write_config(tmp_path / "c.yaml", config))


def test_generation_counts_unsupported_names_and_numbers(tmp_path: Path) -> None:
    text = "Caller: hi, this is Dana. My order 4471 never arrived."
    answer = "Issue: order 4471 missing. Dana was promised a refund by Marco within 5 days."
    assert unsupported_tokens(answer, text) == ["Marco", "5"], "sentence openers are not names"
    task = {"type": "generation", "instruction": "Summarise the call."}
    rows = [{**_teacher_row(0, text, {}, None), "label": answer, "raw": answer},
            {**_teacher_row(1, text + " Thanks", {}, None), "label": "Issue: order 4471 missing.",
             "raw": "Issue: order 4471 missing."}]
    (tmp_path / "counted").mkdir()
    dropped, kept, report = _filter(tmp_path / "counted", rows, task=task)
    assert len(kept) == 2 and report["grounding"]["per_row"] == {"0": 1, "2": 1}
    assert json.loads(kept["inputs:0"]["grounding"]) == [{"field": "answer", "value": "Marco"},
                                                         {"field": "answer", "value": "5"}]
    (tmp_path / "capped").mkdir()
    dropped, kept, _ = _filter(tmp_path / "capped", rows, task=task, max_unsupported=1)
    assert dropped["inputs:0"]["drop_reason"] == "unsupported" and list(kept) == ["inputs:1"]
