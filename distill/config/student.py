"""The `student` section of a config: its base model, LoRA and training, checked against what vLLM can serve."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from distill.config.labels import ServerConfig
from distill.strict import Strict

# The largest --max-lora-rank vLLM accepts (teacher.server.LORA_RANK_CHOICES; a test keeps the two equal).
VLLM_MAX_LORA_RANK = 512
# Module names of token embeddings and output heads in common architectures; LoRA there is not servable by vLLM.
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
                          "on BANKING77 the task score still rose from 2 to 3 (docs/recipes.md).")
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
