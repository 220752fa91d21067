"""One YAML file describes a whole study; this module is its schema.

Relative paths in a config are resolved against the config file's own folder, so a study runs the same from
any working directory. Every validation problem is reported at once, each with its YAML path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from distill.errors import UserError
from distill.serve.settings import ServeConfig
from distill.strict import Strict, nearest_key, read_yaml, resolve_existing
from distill.tasks import DEFAULT_TYPE, REGISTRY, make_task, settings_union

TaskConfig = settings_union()


class DataConfig(Strict):
    inputs: Path = Field(description="Rows for the teacher to label (CSV, JSONL or Parquet).")
    test: Path | None = Field(None, description="Held-out queries for compare; if absent, taken from `inputs`.")
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "parquet", "restaurant8k"] = Field(
        "auto", description="How to read `inputs` and `test`; auto: by file suffix. restaurant8k: PolyAI's "
        "slot-span JSON, read as `text` and a JSON object of slot values as `gold`.")
    header: list[str] | None = Field(None, description="Column names for a CSV/TSV file without a header row.")
    quoting: Literal["auto", "csv", "none"] = Field(
        "auto", description="Quote marks in a CSV/TSV file. csv: a quoted field may hold the delimiter and line "
        "breaks; none: a quote mark is plain text and each line is one row. auto: csv for .csv, none for .tsv.")
    text_column: str = "text"
    gold_column: str | None = Field(None, description="Column with gold answers (text, or JSON values), used "
                                    "only to score.")
    id_column: str | None = Field(None, description="Column with a unique id per row; default: a hash of the "
                                  "row's text, so a row keeps its id wherever it moves in the file.")
    max_inputs: int | None = Field(None, gt=0, description="Label at most this many input rows.")
    test_size: int = Field(50, gt=0, description="Rows held out of `inputs` for compare when `test` is absent.")
    max_test: int | None = Field(None, gt=0, description="Compare on this many test rows (the test file must "
                                 "have at least as many).")
    allow_test_in_inputs: bool = Field(
        False, description="Accept a `test` file whose every query is also in `inputs` (or the reverse); those "
        "inputs are labelled, then dropped as leaks_test.")
    seed: int = 0

    _check_paths = field_validator("inputs", "test")(resolve_existing)

    @model_validator(mode="after")
    def _test_size_needs_no_test(self) -> DataConfig:
        if self.test is not None and "test_size" in self.model_fields_set:
            raise ValueError("test_size holds rows out of `inputs` when there is no `test` file; with `test` set it "
                             "does nothing: remove one of them (data.max_test caps the test rows)")
        return self


class ServerConfig(Strict):
    """How distill starts a vLLM OpenAI-compatible server for a model."""

    dtype: str = "bfloat16"
    max_model_len: int | None = Field(2048, gt=0)
    cpu_kv_cache_gib: float = Field(2.0, gt=0, description="VLLM_CPU_KVCACHE_SPACE on CPU builds.")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1, description="vLLM engine replicas behind one URL (one per GPU group of "
                                    "tensor x pipeline size); teacher.concurrency then counts for each.")
    enable_prefix_caching: bool = True
    startup_timeout_s: float = Field(900, gt=0)
    compact_json: bool = Field(
        True, description="JSON-constrained outputs without free whitespace, which a model may otherwise pad "
        "them with (paid tokens, and truncated objects).")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile in vLLM; auto: off on the CPU build, where it added ~70 s of start-up "
        "and no measurable throughput, on elsewhere.")
    cpu_threads: int | None = Field(
        None, gt=0, description="CPU build: cores for the engine; default all (vLLM's own default keeps one idle).")
    extra_args: list[str] = Field(default_factory=list, description="Passed to vLLM as they are.")


class TeacherConfig(Strict):
    model: str | None = Field(None, description="Local HF folder, GGUF file, catalogue name (`distill models list`) "
                              "or hub id; may be left out where `recorded` answers are the teacher.")
    recorded: Path | None = Field(
        None, description="Answers already paid for, as the teacher (teacher/recorded.py): a table (CSV, JSONL, "
        "Parquet) of input text (or data.id_column) and answer, a JSONL gateway log of {request, response} objects, "
        "or a Batch API output file (with `recorded_requests`). Inputs it lacks go to `model`/`url` if set, else "
        "are listed and left out.")
    recorded_answer_column: str = Field("answer", description="The answer column of a `recorded` table.")
    recorded_requests: Path | None = Field(None, description="The Batch API input file whose `custom_id`s the "
                                           "`recorded` output file answers.")
    url: str | list[str] | None = Field(
        None, description="Use running OpenAI-compatible server(s) instead of starting one; with several URLs "
        "(replicas of one model) each request goes to the least busy.")
    api_key_env: str | None = Field(None, description="Environment variable holding the endpoint's API key.")
    served_model_name: str | None = Field(None, description="Model name at `url`; default: `model`.")
    server: ServerConfig = ServerConfig()
    concurrency: int = Field(
        256, ge=1, description="Requests in flight per replica (each URL, and each data-parallel engine of a server "
        "started here). 256 is vLLM's default --max-num-seqs on a GPU: its scheduler stays full, the excess waits "
        "in its queue. On a CPU build 16 is plenty (the shipped configs say so).")
    max_failures_in_a_row: int = Field(20, ge=1, description="Stop the run after this many failed requests in a "
                                       "row (after retries); answers paid for stay cached.")
    max_failure_rate: float = Field(0.5, gt=0, le=1, description="Stop the run when more than this share of the "
                                    "last 200 requests failed (after retries).")
    max_invalid_rate: float = Field(0.8, gt=0, le=1, description="A broken server answers but says nothing: stop "
                                    "when more than this share of the last 32 answers is empty or invalid, and "
                                    "record a run with more than this share invalid overall as partial; the next "
                                    "run asks for those answers again.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature of the labels; compare asks the teacher "
                               "greedily (temperature 0, one sample), the one reference every student is measured "
                               "against.")
    max_tokens: int = Field(32, gt=0)
    top_logprobs: int = Field(5, ge=0, le=20, description="Alternatives kept at the answer's first token.")
    samples: int = Field(1, ge=1, description="Answers per input (n); >1 gives a majority vote and its share.")
    rationale: bool = Field(False, description="Ask the teacher to explain, then answer; kept in its own column.")
    request_timeout_s: float = Field(300, gt=0)
    max_retries: int = Field(4, ge=0, description="Retries (exponential backoff, jitter) on errors, 429 and 5xx.")
    max_cost: float | None = Field(None, gt=0, description="Stop labelling cleanly once this much is spent ($).")
    skip_oversize: bool = Field(False, description="Record prompts longer than the context and go on, "
                                "instead of refusing the input file.")
    fidelity_check: int = Field(
        0, ge=0, description="Also send this many sampled rows without the output constraint (temperature 0) and "
        "report in the filter report where the constraint changed an answer the teacher gave validly; 0: off.")

    _check_recorded = field_validator("recorded", "recorded_requests")(resolve_existing)

    @model_validator(mode="after")
    def _sampling_needs_temperature(self) -> TeacherConfig:
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 needs temperature > 0, or every sample is the same")
        if self.model is None and (self.recorded is None or self.url is not None):
            raise ValueError("give teacher.model (with teacher.url for a running server), or teacher.recorded")
        if self.recorded_requests is not None and self.recorded is None:
            raise ValueError("teacher.recorded_requests needs teacher.recorded (the batch output file)")
        return self

    @property
    def live(self) -> bool:
        """A model answers what the recorded answers lack."""
        return self.model is not None

    @property
    def name(self) -> str:
        return self.model or f"recorded answers ({self.recorded.name if self.recorded else '?'})"

    @property
    def urls(self) -> list[str]:
        if self.url is None:
            return []
        return [self.url] if isinstance(self.url, str) else list(self.url)


class FilterConfig(Strict):
    """Each filter records a reason for every row it drops; checks run in the order of these keys."""

    min_text_chars: int | None = Field(None, ge=0, description="Drop inputs shorter than this (too_short).")
    max_text_chars: int | None = Field(None, gt=0, description="Drop inputs longer than this (too_long).")
    max_output_chars: int | None = Field(None, gt=0, description="Drop teacher outputs longer than this.")
    min_logprob: float | None = Field(
        None, le=0, description="Drop answers the teacher gave with a lower log-probability (low_confidence): a "
        "single label's own (its probability, however many tokens), other answers' mean per token.")
    min_vote_share: float | None = Field(
        None, gt=0, le=1, description="With teacher.samples > 1: drop answers with a smaller majority.")
    grounding: bool = Field(True, description="Extraction: drop an answer with a string value that does not occur "
                            "in its input as whole tokens (after folding case, accents, spaces and punctuation at "
                            "the ends of words) as ungrounded, naming the fields.")
    ungrounded_fields: list[str] = Field(
        default_factory=list, description="Extraction fields (dotted paths for nested ones) the teacher may "
        "normalise, e.g. [date, amount]: not checked for grounding. Schema enums, non-strings and properties "
        "marked `\"x-grounded\": false` are exempt anyway.")
    grounding_min_similarity: float | None = Field(
        None, gt=0, le=1, description="Also accept a value this similar (rapidfuzz ratio, 0-1) to a run of input "
        "tokens, for noisy inputs such as OCR; null: exact tokens only.")
    max_unsupported: int | None = Field(
        None, ge=0, description="Generation: drop answers with more numbers and capitalised names absent from "
        "the input than this (unsupported); null: count them in the report only.")
    dedup_exact: bool = Field(True, description="Drop repeats of a text after normalising case and spaces.")
    near_dup_threshold: float | None = Field(
        0.8, gt=0, le=1, description="Drop rows whose word-shingle Jaccard similarity (MinHash LSH) to an "
        "earlier kept row, or to a test row, reaches this; null turns near-dedup off.")
    max_per_label: int | None = Field(
        None, gt=0, description="Keep at most this many rows per label, the most confident first, so a "
        "dominant label does not drown the rare ones (over_label_cap).")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Share of kept rows held out as `eval`.")
    max_train_rows: int | None = Field(
        None, gt=0, description="Train on at most this many kept rows: the first of the seeded order, so smaller "
        "budgets are nested subsets of larger ones (learning curves); the rest are dropped as over_label_budget.")
    audit_samples: int = Field(10, ge=0, description="Teacher-vs-gold disagreements quoted in the report.")
    seed: int = 0


# Module names of token embeddings and output heads in common architectures; LoRA there is not servable by vLLM.
# The largest --max-lora-rank vLLM accepts (teacher.server.LORA_RANK_CHOICES; a test keeps the two equal).
VLLM_MAX_LORA_RANK = 512
EMBEDDING_MODULES = ("embed_tokens", "lm_head", "wte", "embed_in", "embed_out", "word_embeddings", "output_layer")


class LoraConfig(Strict):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA (peft); slower steps, often better "
                           "at low rank. vLLM cannot load DoRA adapters: ship the merged student.")
    modules_to_save: list[str] | None = Field(
        None, description="Fully trained extra modules (peft); vLLM cannot load an adapter with any, so only "
        "null or [] is accepted.")

    @model_validator(mode="after")
    def _servable_by_vllm(self) -> LoraConfig:
        """Refuse, before any training, what vLLM cannot load: it serves the adapter in compare and in production."""
        if self.modules_to_save:
            raise ValueError(f"modules_to_save={self.modules_to_save}: vLLM cannot load an adapter that trains "
                             "whole modules; remove modules_to_save (LoRA on the linear layers covers them)")
        if self.r > VLLM_MAX_LORA_RANK:
            raise ValueError(f"r={self.r}: vLLM serves LoRA ranks up to {VLLM_MAX_LORA_RANK}; lower r")
        targets = [self.target_modules] if isinstance(self.target_modules, str) else self.target_modules
        trained = [t for t in targets if any(word in t for word in EMBEDDING_MODULES)]
        if trained:
            raise ValueError(f"target_modules {trained}: vLLM serves no LoRA on the embeddings or the output head; "
                             "target the linear layers only (e.g. all-linear)")
        return self


class StudentConfig(Strict):
    model: str = Field(description="Base model: local HF folder, GGUF file, catalogue name or hub id.")
    lora: LoraConfig = LoraConfig()
    epochs: float = Field(3.0, gt=0, description="Passes over the training rows (early stopping may end sooner); "
                          "on BANKING77 the task score still rose from 2 to 3 (README, Recipe measurements).")
    batch_size: int = Field(16, gt=0)
    learning_rate: float = Field(3e-4, gt=0)
    max_seq_len: int = Field(256, gt=8)
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Dtype of the weights in training.")
    mixed_precision: Literal["bf16", "no"] = Field(
        "bf16", description="bf16: matrix products in bfloat16 under autocast (CPUs with AVX512-BF16/AMX, "
        "Ampere+ GPUs); no: all in `dtype`.")
    quantization: Literal["none", "4bit"] = Field(
        "none", description="4bit: QLoRA, base weights in 4-bit NF4 (bitsandbytes; CUDA GPUs only).")
    prompt_format: Literal["plain", "chat"] = Field(
        "plain", description="plain: the task's student prompt as it is (base models); chat: that prompt as a "
        "user turn in the student's own chat template. The same in training, serving and compare.")
    evals_per_epoch: int = Field(1, ge=1, description="Evaluations on the eval split per epoch: loss, and the "
                                 "task metric on answers the student generates.")
    eval_max_rows: int = Field(200, gt=0, description="Eval rows the student answers at each evaluation.")
    early_stopping_patience: int | None = Field(
        2, ge=1, description="Stop after this many evaluations without a better task metric (null: train every "
        "epoch). The checkpoint kept either way is the latest whose task metric is within one standard error of "
        "the best.")
    distill_weight: float = Field(
        0.0, ge=0, le=1, description="Knowledge distillation: weight of the loss against the teacher's top-k "
        "probabilities at the answer's first token (kept by generate), mapped to labels and then to the student's "
        "own first token of each label, beside the hard-label loss (1 - weight). Single-label classification only; "
        "teacher and student may have different tokenizers.")
    packing: bool = Field(True, description="Pack each batch's examples into one row without cross-attention "
                          "(no compute on padding); false: padded batches.")
    rationale_weight: float = Field(
        0.0, ge=0, description="Rationale distillation (Distilling Step-by-Step): also train the student to write "
        "the teacher's rationale (teacher.rationale: true) after `rationale_prompt`, as a second task; loss = label "
        "loss + this x rationale loss, each averaged over its own tokens. Evaluation and serving ask for the label.")
    rationale_prompt: str = Field("{text}\nExplain:", description="The student's prompt for the rationale task; "
                                  "`{text}` is replaced by the input. Must differ from the task's student_prompt.")
    seed: int = 0
    server: ServerConfig = ServerConfig()
    max_tokens: int = Field(16, gt=0, description="Completion budget of the student at inference.")
    export_merged: bool = Field(True, description="Also save the student with the adapter merged in (train/merged).")
    retrain_min_new_rows: int = Field(
        0, ge=0, description="`distill run` retrains only once this many new training rows have accumulated "
        "since the current student was trained; until then the current student stays (0: retrain on any change).")

    @field_validator("rationale_prompt")
    @classmethod
    def _rationale_prompt_fills(cls, value: str) -> str:
        try:  # filled as the task's student_prompt is: a stray brace fails here, not at train time
            filled = value.format(text="\0")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"braces other than {{text}} ({type(exc).__name__}: {exc}); write a literal brace as "
                             "{{ or }}") from None
        if "\0" not in filled:
            raise ValueError("must contain the placeholder {text}")
        return value


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


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


# Teacher settings a study variant may change: they change how the labels are made, not the teacher that every
# student is compared with (compare asks it once, greedily), so all variants stay in one table.
VARIANT_TEACHER_KEYS = ("samples", "temperature")


def split_variant(override: dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
    """A variant's student keys, its `filter` keys and its `teacher` keys (StudentConfig has neither key, so
    none is shadowed)."""
    return ({k: v for k, v in override.items() if k not in ("filter", "teacher")}, override.get("filter", {}),
            override.get("teacher", {}))


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


# A run folder's name (runs/<name>, variants/<name>): no path separators, and not `.`, `..` or a hidden folder.
FOLDER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


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
        for name, override in variants.items():
            if not re.fullmatch(FOLDER_NAME, name) or name == "main" or name.startswith("labels-"):
                raise ValueError(f"variant name {name!r}: use letters, digits, '_', '.', '-', starting with a letter "
                                 "or digit (and not 'main' or 'labels-...', which name the learning curve's points)")
            student_keys, filter_keys, teacher_keys = split_variant(override)
            for section, keys in (("filter", filter_keys), ("teacher", teacher_keys)):
                if not isinstance(keys, dict):
                    raise ValueError(f"variant {name!r}: `{section}` must map keys of `{section}` to values, not "
                                     f"{keys!r}")
            if other := sorted(set(teacher_keys) - set(VARIANT_TEACHER_KEYS)):
                raise ValueError(f"variant {name!r} overrides teacher.{', teacher.'.join(other)}: a variant may "
                                 f"change only teacher.{' and teacher.'.join(VARIANT_TEACHER_KEYS)} (how labels are "
                                 "made); another teacher is another study, in a run folder of its own")
            sections = (("filter", FilterConfig, info.data.get("filter"), filter_keys),
                        ("teacher", TeacherConfig, info.data.get("teacher"), teacher_keys),
                        ("student", StudentConfig, info.data.get("student"), student_keys))
            for section, model, base, keys in sections:
                if base is None:
                    continue  # the section itself is invalid and reported on its own
                try:
                    model.model_validate(deep_merge(base.model_dump(), keys))
                except ValidationError as exc:
                    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or section}: "
                                         f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
                    raise ValueError(f"variant {name!r} overrides {section} with {problems}") from None
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
        # Built from the keys the config sets, so what it leaves to defaults stays as the main student has it
        # (an unvalidated default 900 would come back 900.0 and change the variant's stage keys).
        student_keys, filter_keys, teacher_keys = split_variant(self.variants[name])
        student = StudentConfig.model_validate(deep_merge(self.student.model_dump(exclude_unset=True), student_keys))
        filters = FilterConfig.model_validate(deep_merge(self.filter.model_dump(exclude_unset=True), filter_keys))
        teacher = (TeacherConfig.model_validate(deep_merge(self.teacher.model_dump(exclude_unset=True), teacher_keys))
                   if teacher_keys else self.teacher)
        return self.model_copy(update={"student": student, "filter": filters, "teacher": teacher, "variants": {}})


def _format_errors(path: Path, error: ValidationError, raw: dict[str, Any], overridden: Sequence[str] = ()) -> str:
    lines = []
    for item in error.errors():
        loc = [part for i, part in enumerate(item["loc"]) if not (i == 1 and item["loc"][0] == "task"
                                                                  and part in REGISTRY)]  # the type's tag
        key = ".".join(str(part) for part in loc) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key" + _suggestion(raw, loc)
        origin = " (given with --set)" if any(key == o or key.startswith(o + ".") for o in overridden) else ""
        lines.append(f"{path}: {key}: {message}{origin}")
    return "\n".join(lines)


def _suggestion(raw: dict[str, Any], loc: list[Any]) -> str:
    """`; did you mean data.test?` for an unknown key at `loc`, as `--set` says it."""
    model: type[BaseModel] | None = Config
    node: Any = raw
    for part in loc[:-1]:
        if model is None or part not in model.model_fields or not isinstance(node, dict):
            return ""
        node = node.get(part)
        model = _section_model(model.model_fields[part].annotation, node, str(part))
    close = nearest_key(str(loc[-1]), model.model_fields) if model is not None else None
    return (f"; did you mean {'.'.join(map(str, [*loc[:-1], close]))}?" if close
            else " (check its spelling against the documented keys)")


def _section_model(annotation: Any, raw_section: Any, name: str) -> type[BaseModel] | None:
    """The config model a key's value is validated with; None for a plain value or a free mapping."""
    if name == "task":  # a tagged union: the keys are those of the type the config names
        tag = raw_section.get("type", DEFAULT_TYPE) if isinstance(raw_section, dict) else DEFAULT_TYPE
        return REGISTRY[tag].Settings if tag in REGISTRY else None
    for arg in (annotation, *get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _leaf_value(annotation: Any, text: str) -> Any:
    """A `--set` value typed as YAML would type it, except that a text or path field keeps the text as given
    (so `name=007` stays a name) and a relative path is taken from the working directory, as a shell user means."""
    kinds = {annotation, *get_args(annotation)}
    if Path in kinds and text not in ("null", "~"):
        return str(Path(text).expanduser().resolve())
    if str in kinds and not kinds & {int, float, bool, list, dict} and text not in ("null", "~"):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(raw: dict[str, Any], assignment: str) -> str:
    """Apply one `section.key=value` to a raw config mapping; returns the dotted key. A key the schema does not
    have is a `UserError` naming the nearest valid key."""
    key, sep, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise UserError(f"--set {assignment!r}: write it as section.key=value, e.g. student.epochs=1")
    model: type[BaseModel] | None = Config
    node = raw
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        if model is None:  # inside a free mapping (variants, a JSON schema): any key goes
            annotation: Any = Any
        elif part not in model.model_fields:
            close = nearest_key(part, model.model_fields)
            hint = (f"; did you mean {'.'.join([*parts[:depth], close])}?" if close
                    else f"; the keys here are {', '.join(model.model_fields)}")
            raise UserError(f"--set {key}: unknown key {here!r}{hint}")
        else:
            annotation = model.model_fields[part].annotation
        if depth == len(parts) - 1:
            node[part] = _leaf_value(annotation, text.strip())
            return key
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"--set {key}: {here} is a value, not a section")
        model = _section_model(annotation, child, part) if model is not None else None
        node = child
    return key


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read and validate a study config, with `section.key=value` overrides applied first (the result is the
    effective config: what manifests record and keys hash); raise `UserError` listing every problem."""
    path = Path(path).resolve()
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config must be a YAML mapping with keys name, task, data, teacher, ...")
    changed = [apply_override(raw, item) for item in overrides]
    try:
        return Config.model_validate(raw, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise UserError(_format_errors(path, exc, raw, changed)) from exc
