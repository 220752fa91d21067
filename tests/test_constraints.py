"""Output constraints must not make the teacher worse: placeholder values, the answer formats the constraints
allow, and the opt-in fidelity check (constrained vs unconstrained answers) through generate and filter."""

import json
from functools import partial
from pathlib import Path

import pytest

from distill.artifacts import write_json, write_rows
from distill.config import Config, load_config
from distill.data.inputs import split_inputs
from distill.filter.stage import filter_stage
from distill.layout import RunLayout
from distill.tasks import make_task
from distill.tasks.extraction import JSON_SEPARATORS, ExtractionSettings
from fake_openai import FakeEndpoint
from helpers import DEMO_INPUTS, study_config, write_config
from teacher import fidelity
from teacher.generate import generate
from teacher.protocol import teacher_request
from teacher.rows import TEACHER_COLUMNS, TEST_COLUMNS

SCHEMA = {"type": "object", "additionalProperties": False,
          "properties": {"date": {"type": ["string", "null"]}, "time": {"type": ["string", "null"]},
                         "people": {"type": ["string", "null"]}, "status": {"enum": ["none", "booked", None]}}}


def _extraction(**settings: object):
    return make_task(ExtractionSettings(type="extraction", instruction="Extract.", json_schema=SCHEMA, **settings))


def test_a_null_string_is_not_kept_as_a_value() -> None:
    task = _extraction()
    parsed = task.parse('{"date": "null", "time": " N/A ", "people": "4 adults"}')
    assert parsed.value == '{"people":"4 adults"}'
    assert task.parse('{"date": "None", "time": "", "people": "-"}').value == "{}"
    assert task.placeholder_fields('{"date": "null", "time": "7pm", "people": "n/a"}') == ["date", "people"]


def test_placeholders_can_make_an_answer_invalid_instead() -> None:
    parsed = _extraction(placeholders="invalid").parse('{"date": "null", "people": "2"}')
    assert parsed.value is None and parsed.error == "a placeholder, not a value, at date (task.placeholders)"


def test_a_value_the_schema_lists_is_not_a_placeholder() -> None:
    # "none" is one of the field's own enum values here, so it is an answer, not a missing one.
    assert _extraction().parse('{"status": "none"}').value == '{"status":"none"}'


def test_an_answer_in_a_markdown_fence_is_read() -> None:
    # What a teacher writes without a constraint; the fidelity check compares it with the constrained answer.
    assert _extraction().parse('```json\n{"date": "Friday"}\n```').value == '{"date":"Friday"}'
    assert _extraction().parse('```json\n{"date": "Friday"}').error.startswith("not valid JSON")


def test_json_fields_are_compared_part_by_part() -> None:
    task = _extraction()
    assert task.part_matches('{"date":"friday"}', '{"date":"Friday","people":"2"}') == [True, True, False, True]
    assert task.part_matches(None, '{"date":"Friday"}') == [False] * 4


class TwoFaced(FakeEndpoint):
    """Answers one way under a structured-outputs constraint and another way without one."""

    def __init__(self, constrained: str, free: str) -> None:
        super().__init__(answer=constrained)
        self.free = free

    def _reply(self, body: dict) -> tuple[int, dict]:
        status, payload = super()._reply(body)
        if "structured_outputs" not in body:
            for choice in payload["choices"]:
                choice["message"]["content"] = self.free
        return status, payload


def _config(tmp_path: Path, url: str, check: int, **teacher: object) -> Config:
    config = study_config("fake-model", DEMO_INPUTS)
    config["data"]["max_inputs"] = 8
    config["teacher"] = {"model": "fake-model", "url": url, "concurrency": 2, "max_retries": 0,
                         "fidelity_check": check, **teacher}
    return load_config(write_config(tmp_path / "c.yaml", config))


def _check(tmp_path: Path, url: str, check: int, **teacher: object) -> dict:
    """The check as generate makes it, then the filter report on rows a generate stage would leave."""
    config = _config(tmp_path, url, check, **teacher)
    task, layout = make_task(config.task), RunLayout(tmp_path)
    examples = split_inputs(config).to_label
    fidelity.run(config, task, examples, {}, layout.generate, partial(teacher_request, task),
                 {"model": config.teacher.model})
    write_rows(layout.generate.outputs, [_row(e.id, e.text, "billing") for e in examples], TEACHER_COLUMNS)
    write_rows(layout.generate.test, [], TEST_COLUMNS)
    write_json(layout.manifest("generate"), {"stage": "generate"})
    filter_stage(config, layout)
    return json.loads(layout.filter.report_json.read_text())


def _row(row_id: str, text: str, raw: str, label: str | None = "billing") -> dict:
    return {"id": row_id, "text": text, "gold": None, "raw": raw, "label": label, "error": None,
            "rationale": None, "vote_share": None, "samples": "[]", "logprob": -0.1, "top_logprobs": "[]",
            "prompt_tokens": 10, "completion_tokens": 2, "cached_tokens": 0, "latency_ms": 5.0,
            "finish_reason": "stop", "serving_s": 0.01}


def test_fidelity_check_reports_answers_the_constraint_changed(tmp_path: Path) -> None:
    with TwoFaced(constrained="billing", free="refund") as fake:
        report = _check(tmp_path, fake.url, check=4)
    sent = [r for r in fake.requests if "structured_outputs" not in r]
    assert len(sent) == 4 and all(r["temperature"] == 0 for r in sent)
    result = report["constraint_fidelity"]
    assert result["sample"] == 4 and result["unconstrained_valid"] == 4 and result["differences"] == 4
    assert result["field_agreement"] == 0.0
    assert result["examples"][0]["constrained"] == "billing"
    assert result["examples"][0]["unconstrained"] == "refund"
    markdown = RunLayout(tmp_path).filter.report_md.read_text()
    assert "WARNING constraint fidelity: the constraint changed 4 of 4" in markdown


def test_fidelity_check_passes_when_the_constraint_changes_nothing(tmp_path: Path) -> None:
    with TwoFaced(constrained="billing", free="billing") as fake:
        report = _check(tmp_path, fake.url, check=3)
    assert report["constraint_fidelity"]["differences"] == 0
    assert report["constraint_fidelity"]["answer_agreement"] == 1.0


def test_answers_with_a_rationale_are_compared_by_their_label(tmp_path: Path) -> None:
    constrained = json.dumps({"rationale": "It is about an invoice.", "label": "billing"})
    free = json.dumps({"rationale": "The customer asks about a charge.", "label": "billing"})
    with TwoFaced(constrained=constrained, free=free) as fake:
        report = _check(tmp_path, fake.url, check=3, rationale=True)
    assert report["constraint_fidelity"]["unconstrained_valid"] == 3
    assert report["constraint_fidelity"]["differences"] == 0


def test_invalid_unconstrained_answers_are_not_counted_against_the_constraint(tmp_path: Path) -> None:
    with TwoFaced(constrained="billing", free="It is about billing.") as fake:
        report = _check(tmp_path, fake.url, check=3)
    assert report["constraint_fidelity"]["unconstrained_valid"] == 0
    assert report["constraint_fidelity"]["unconstrained_invalid"] == 3
    assert report["constraint_fidelity"]["differences"] == 0


def test_a_rerun_sends_nothing_and_an_old_result_goes_when_the_check_is_off(tmp_path: Path) -> None:
    with TwoFaced(constrained="billing", free="refund") as fake:
        _check(tmp_path, fake.url, check=2)
        _check(tmp_path, fake.url, check=2)
    assert len(fake.requests) == 4
    with TwoFaced(constrained="billing", free="refund") as fake:
        report = _check(tmp_path, fake.url, check=0)
    assert fake.requests == [] and report["constraint_fidelity"] is None
    assert not RunLayout(tmp_path).generate.fidelity.exists()


def test_generate_makes_the_check_when_asked(tmp_path: Path) -> None:
    with TwoFaced(constrained="billing", free="refund") as fake:
        manifest = generate(_config(tmp_path, fake.url, check=3), RunLayout(tmp_path))
    assert sum("structured_outputs" not in r for r in fake.requests) == 3
    assert any(path.endswith("fidelity.json") for path in json.dumps(manifest["outputs"]).split('"'))
    assert json.loads(RunLayout(tmp_path).generate.fidelity.read_text())["differences"] == 3


def test_filter_report_counts_placeholders(tmp_path: Path) -> None:
    config = study_config("fake-model", DEMO_INPUTS)
    config["task"] = {"type": "extraction", "instruction": "Extract.", "json_schema": SCHEMA}
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    layout = RunLayout(tmp_path)
    raws = ['{"date": "null", "time": "7pm"}', '{"date": "N/A", "people": "none"}', '{"people": "2"}']
    task = make_task(loaded.task)
    write_rows(layout.generate.outputs, [_row(f"r{i}", f"text {i}", raw, task.parse(raw).value)
                                         for i, raw in enumerate(raws)], TEACHER_COLUMNS)
    write_rows(layout.generate.test, [], TEST_COLUMNS)
    write_json(layout.manifest("generate"), {"stage": "generate"})
    filter_stage(loaded, layout)
    assert json.loads(layout.filter.report_json.read_text())["placeholders"] == {"date": 2, "people": 1}
    assert "Placeholders" in layout.filter.report_md.read_text()


@pytest.mark.parametrize(("layout", "other"), [("spaced", "compact"), ("compact", "spaced")])
def test_the_prompt_shows_the_layout_the_grammar_allows(layout: str, other: str) -> None:
    from xgrammar.testing import _is_grammar_accept_string as accepts

    task = _extraction(json_layout=layout)
    shown = task.system_prompt().splitlines()[-1].replace("...", "null")
    assert shown == json.dumps(dict.fromkeys(SCHEMA["properties"]), separators=JSON_SEPARATORS[layout])
    grammar = task.teacher_constraint()["grammar"]
    assert accepts(grammar, shown)
    assert not accepts(grammar, json.dumps(dict.fromkeys(SCHEMA["properties"]), separators=JSON_SEPARATORS[other]))


def test_the_grammar_keeps_the_schema_field_order() -> None:
    from xgrammar.testing import _is_grammar_accept_string as accepts

    grammar = _extraction().teacher_constraint()["grammar"]
    assert accepts(grammar, '{"date": "Friday", "people": "2"}')
    assert not accepts(grammar, '{"people": "2", "date": "Friday"}')


def test_free_layout_and_the_student_use_the_json_schema() -> None:
    # The student learns canonical compact JSON; its constraint is the schema under its server's compact flag.
    assert _extraction(json_layout="free").teacher_constraint() == {"json": SCHEMA}
    assert _extraction().student_constraint() == {"json": SCHEMA}
    assert "schema" not in _extraction().system_prompt()  # a raw schema in the prompt was echoed back
