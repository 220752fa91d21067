"""The labelling sections of a config: the input rows (`data`), the teacher and the server it may run on (a
student's server takes the same settings), and the filter that keeps the teacher's good answers."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from distill.strict import Strict, resolve_existing


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

