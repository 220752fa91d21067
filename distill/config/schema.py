"""The whole config of a study (`Config`): its sections, and the checks that span them, each applied to the main
run and to every variant alike."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from distill.config.labels import DataConfig, FilterConfig, TeacherConfig
from distill.config.measure import CompareConfig, CostConfig, TrackingConfig
from distill.config.student import StudentConfig
from distill.config.variants import FOLDER_NAME, check_variant, variant_config
from distill.serve.settings import ServeConfig
from distill.strict import Strict
from distill.tasks import make_task, settings_union

TaskConfig = settings_union()


class StudyConfig(Strict):
    label_counts: list[int] = Field(
        default_factory=list, description="Learning curve (`distill study`): train the student on nested subsets "
        "of this many kept labels each, measure every point on the same test set, and fit how many labels reach "
        "the decision rule's bar, e.g. [250, 500, 1000, 2000].")

    @field_validator("label_counts")
    @classmethod
    def _counts_valid(cls, counts: list[int]) -> list[int]:
        if any(n <= 0 for n in counts) or len(set(counts)) != len(counts):
            raise ValueError("give distinct positive label counts")
        return sorted(counts)


class Config(Strict):
    name: str = Field(description="The study's name: its run folder is runs/<name>.")
    task: TaskConfig
    data: DataConfig
    teacher: TeacherConfig
    filter: FilterConfig = FilterConfig()
    student: StudentConfig
    compare: CompareConfig = CompareConfig()
    cost: CostConfig
    tracking: TrackingConfig = TrackingConfig()
    serve: ServeConfig = ServeConfig()
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Other student settings to study beside `student` (`distill study`): "
        "name -> keys of `student` to override, e.g. {r8: {lora: {r: 8}}, base-qwen: {model: ...}}; under "
        "`filter`, keys of `filter` (the variant then filters the same labels itself), e.g. "
        "{confident: {filter: {min_logprob: -0.5}}}; under `teacher`, teacher.samples and temperature (the "
        "variant labels the inputs again, e.g. self-consistency: {sc5: {teacher: {samples: 5, temperature: 0.7}, "
        "filter: {min_vote_share: 0.6}}}).")
    study: StudyConfig = StudyConfig()

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, name: str) -> str:
        if not re.fullmatch(FOLDER_NAME, name):
            raise ValueError(f"{name!r} names the run folder runs/<name>: use letters, digits, '_', '.', '-', "
                             "starting with a letter or digit (no path separators, not '.' or '..')")
        return name

    @field_validator("variants")
    @classmethod
    def _variants_valid(cls, variants: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        bases = {section: info.data.get(section) for section in ("filter", "teacher", "student")}
        for name, override in variants.items():
            check_variant(name, override, bases)
        return variants

    @model_validator(mode="after")
    def _task_supports_options(self) -> Config:
        task = make_task(self.task)
        if self.teacher.rationale and not task.supports_rationale:
            raise ValueError(f"teacher.rationale: a {self.task.type} task has no rationale option; set it to false")
        # Variants are filtered, trained and served like the main run: each is checked by the same rules.
        for where, run in (("", self), *((f"variants.{name}.", self.variant(name)) for name in self.variants)):
            if run.filter.max_per_label is not None and not task.single_label:
                raise ValueError(f"{where}filter.max_per_label: caps apply to single-label classification only; "
                                 "remove it")
            if run.filter.min_vote_share is not None and run.teacher.samples == 1:
                raise ValueError(f"{where}filter.min_vote_share: one answer per input has no vote share to filter "
                                 f"on; set {where}teacher.samples above 1 (with a temperature) or remove it")
            self._student_fits(where.rstrip(".") or "student", run.student, task)
            self._grounding_fits(where, run.filter, task)
        return self

    @model_validator(mode="after")
    def _url_teacher_has_a_fleet(self) -> Config:
        # A running server's size cannot be seen from its URL; guessing one accelerator made a 70B on 8 GPUs per
        # replica 8x too cheap, and with it the saving and the payback.
        priced_per_hour = self.cost.teacher_input_per_1m is None or self.cost.teacher_output_per_1m is None
        if self.teacher.urls and priced_per_hour and self.cost.teacher_gpus is None:
            raise ValueError("cost.teacher_gpus: a teacher at teacher.url priced per hour needs the number of "
                             "accelerators serving it, all replicas together (e.g. 4 URLs of 8 GPUs each: 32); "
                             "or give per-token prices (cost.teacher_input_per_1m, cost.teacher_output_per_1m)")
        if not self.teacher.live and self.teacher.fidelity_check:
            raise ValueError("teacher.fidelity_check: it asks a live teacher without constraints, and recorded answers "
                             "alone (teacher.recorded, no teacher.model) have none; set it to 0")
        if not self.teacher.live and priced_per_hour:  # no server of ours answers: there is no hour to price
            raise ValueError("cost.teacher_input_per_1m, cost.teacher_output_per_1m: recorded answers alone "
                             "(teacher.recorded, no teacher.model) are priced by the tokens they were billed for; "
                             "give both prices as the provider bills them")
        return self

    def _grounding_fits(self, where: str, rules: FilterConfig, task: Any) -> None:
        if rules.ungrounded_fields and (unknown := task.unknown_fields(rules.ungrounded_fields)):
            raise ValueError(f"{where}filter.ungrounded_fields: {unknown} not a field of this "
                             f"{self.task.type} task's answers (fields: {task.field_names()}); fix the name or "
                             "remove it")
        if rules.max_unsupported is not None and task.support_check != "unsupported":
            raise ValueError(f"{where}filter.max_unsupported counts names and numbers in free text: generation "
                             f"tasks only, not {self.task.type}; remove it")

    def _student_fits(self, where: str, student: StudentConfig, task: Any) -> None:
        if student.distill_weight and (self.teacher.rationale or not self.teacher.top_logprobs):
            raise ValueError(f"{where}.distill_weight needs the teacher's top-k at the answer's first token: set "
                             "teacher.top_logprobs > 0 and teacher.rationale: false")
        if student.distill_weight and not task.single_label:
            raise ValueError(f"{where}.distill_weight: the teacher's first-token probabilities are mapped to labels, "
                             f"so distillation applies to single-label classification only, not to this "
                             f"{self.task.type}{' (multi_label)' if self.task.type == 'classification' else ''} "
                             "task; set distill_weight: 0")
        if student.lora.use_dora and self.compare.student_serving != "merged":
            raise ValueError(f"{where}.lora.use_dora: vLLM cannot load DoRA adapters; ship the merged student "
                             "(compare.student_serving: merged) or set use_dora: false")
        # The rationale task needs the teacher's rationales, and a prompt of its own (a shared one would teach
        # the student to answer the label prompt with an explanation).
        if student.rationale_weight and not self.teacher.rationale:
            raise ValueError(f"{where}.rationale_weight > 0 trains the student on the teacher's rationales: set "
                             f"teacher.rationale: true (or {where}.rationale_weight: 0)")
        if student.rationale_weight and student.rationale_prompt == self.task.student_prompt:
            raise ValueError(f"{where}.rationale_prompt is task.student_prompt: give the rationale task a prompt "
                             "of its own, e.g. '{text}\\nExplain:'")

    def with_label_budget(self, labels: int) -> Config:
        """This study trained on the first `labels` kept rows: one point of the learning curve. The prompt-only
        baseline does not depend on the labels, so the point leaves it out."""
        return self.model_copy(update={
            "filter": self.filter.model_copy(update={"max_train_rows": labels}),
            "compare": self.compare.model_copy(update={"prompt_baseline": False}),
            "variants": {}, "study": StudyConfig()})

    def variant(self, name: str) -> Config:
        """This study with the student (filter, labelling settings) of variant `name`, and no variants of its own."""
        return variant_config(self, name)
