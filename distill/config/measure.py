"""The sections that measure and record a student: compare's decision rule and sweep, the prices of cost, and
where runs are tracked."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distill.strict import Strict


class CompareConfig(Strict):
    max_quality_drop: float = Field(
        0.02, ge=0, lt=1, description="The rule, with gold: distil only if the lower 95% bound of the paired "
        "difference in quality (student - teacher) is above minus this.")
    min_agreement: float = Field(
        0.95, gt=0, lt=1, description="The rule, without gold: distil only if the lower 95% bound of the student's "
        "agreement with the teacher is above this.")
    max_concurrency: int = Field(
        64, ge=1, description="Cost at saturation: requests in flight rise 1, 4, 16, ... up to this until "
        "queries/s stop rising by more than 5%; each model is costed at that point.")
    latency_slo_ms: float | None = Field(
        None, gt=0, description="Stop raising requests in flight once p95 latency passes this (ms).")
    max_failed_share: float = Field(
        0.01, ge=0, lt=1, description="A model with a larger share of failed requests is reported as failed and "
        "takes no part in cost or quality comparisons.")
    student_serving: Literal["adapter", "merged"] = Field(
        "adapter", description="How the student ships, for the headline numbers: base + LoRA adapter (vLLM "
        "multi-LoRA), or with the adapter merged into the weights. Both are measured when a merged copy exists."
    )
    retime_teacher: bool = Field(
        False, description="Time the teacher again even where its sweep on these test queries is stored (same "
        "teacher, queries, sweep settings and cost.hardware): by default a study's variants and a rerun reuse it.")
    prompt_baseline: bool = Field(True, description="Also measure the student's base model given the teacher's "
                                  "prompt: what fine-tuning bought over prompt engineering alone.")
    target_quality: float | None = Field(
        None, gt=0, le=1, description="Cascade: choose the cheapest student-confidence threshold whose blended "
        "quality (agreement with the teacher where there is no gold) reaches this, instead of the rule's bar; "
        "the cascade is still recommended only if it passes the rule out of sample.")


class CostConfig(Strict):
    """Prices that turn measured time and tokens into money; every report prints the ones it used."""

    hardware: str = Field("2-core CPU", description="Where serving and training ran, for the report.")
    teacher_price_per_hour: float = Field(ge=0, description="Price of one accelerator (or of the CPU machine) "
                                          "serving the teacher; multiplied by teacher_gpus.")
    teacher_gpus: int | None = Field(None, ge=1, description="Accelerators serving the teacher; default: tensor x "
                                     "pipeline x data parallel size of teacher.server when distill starts it, else 1.")
    student_price_per_hour: float = Field(ge=0, description="Price of the machine serving the student.")
    train_price_per_hour: float = Field(ge=0, description="Price of the machine training the student.")
    teacher_input_per_1m: float | None = Field(None, ge=0, description="API price per 1M prompt tokens.")
    teacher_output_per_1m: float | None = Field(None, ge=0, description="API price per 1M completion tokens.")
    teacher_cached_input_per_1m: float | None = Field(
        None, ge=0, description="API price per 1M prompt tokens served from the provider's prompt cache (as billed); "
        "default: teacher_input_per_1m.")
    monthly_queries: int = Field(1_000_000, gt=0, description="Expected traffic, for monthly cost and payback.")

    @model_validator(mode="after")
    def _token_prices_together(self) -> CostConfig:
        if (self.teacher_input_per_1m is None) != (self.teacher_output_per_1m is None):
            raise ValueError("give both teacher_input_per_1m and teacher_output_per_1m, or neither")
        if self.teacher_cached_input_per_1m is not None and self.teacher_input_per_1m is None:
            raise ValueError("teacher_cached_input_per_1m needs teacher_input_per_1m and teacher_output_per_1m")
        return self


Tracker = Literal["mlflow", "trackio", "wandb", "tensorboard"]


class TrackingConfig(Strict):
    mlflow_uri: str | None = Field(None, description="Log each `distill run` to MLflow (needs distill[tracking]).")
    experiment: str = Field("distill", description="MLflow experiment, trackio or wandb project.")
    report_to: list[Tracker] = Field(
        default_factory=list, description="Trackers that receive the training curves (the transformers Trainer's "
        "report_to) and each run's summary: mlflow (at mlflow_uri), trackio and tensorboard (local, offline; "
        "tensorboard writes <run>/tensorboard), wandb (WANDB_MODE=offline works without an account).")

    @model_validator(mode="after")
    def _mlflow_needs_uri(self) -> TrackingConfig:
        if "mlflow" in self.report_to and not self.mlflow_uri:
            raise ValueError("report_to has mlflow: set mlflow_uri too (e.g. file:./mlruns or http://host:5000)")
        return self

    @property
    def trackers(self) -> list[str]:
        """Where the run summary goes: report_to, and MLflow wherever mlflow_uri is set."""
        return sorted(set(self.report_to) | ({"mlflow"} if self.mlflow_uri else set()))
