"""The student model: loading it (and its tokenizer), adding LoRA, and folding the adapter back in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.config import StudentConfig
from distill.errors import UserError
from distill.models import resolve_model


def load_student(student: StudentConfig) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(student.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.eos_token_id is None:
        raise UserError(f"{student.model}: the tokenizer has no EOS token; the student cannot learn to stop")
    if tokenizer.pad_token is None:  # Llama and Mistral tokenizers have none; batched generation needs one
        tokenizer.pad_token = tokenizer.eos_token
    options: dict[str, Any] = {"dtype": getattr(torch, student.dtype)}
    if student.quantization == "4bit":
        options["quantization_config"] = _four_bit_config(student)
    model = AutoModelForCausalLM.from_pretrained(path, **options)
    if student.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # Training needs no KV cache, and with one transformers skips the packed-sequence mask: packed examples
    # would silently attend to each other.
    model.config.use_cache = False
    return tokenizer, model


def _four_bit_config(student: StudentConfig) -> Any:
    import importlib.util

    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("student.quantization: 4bit (QLoRA) needs a CUDA GPU and bitsandbytes "
                        "(pip install bitsandbytes); on this machine use quantization: none")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def add_lora(model: Any, student: StudentConfig) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    set_seed(student.seed)  # the adapter's initial weights come from the global RNG: seed it first
    lora = student.lora
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, use_dora=lora.use_dora,
                        target_modules=lora.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def check_servable(model: Any) -> None:
    """The config refuses what vLLM cannot load; a target_modules pattern can still reach an embedding or the
    output head of this architecture, which only the loaded model shows. Refuse that before any training."""
    from distill.config import EMBEDDING_MODULES

    config = model.peft_config["default"]
    reached = [name for name in model.targeted_module_names if name.rsplit(".", 1)[-1] in EMBEDDING_MODULES]
    if reached or config.modules_to_save:
        raise UserError(f"student.lora.target_modules reaches {reached or config.modules_to_save}, which vLLM "
                        "cannot serve as LoRA; list only linear layers (e.g. q_proj, v_proj) or use all-linear")


def save_merged(model: Any, tokenizer: Any, out: Path) -> None:
    """Fold the adapter into the base weights and save a plain checkpoint that vLLM serves without LoRA."""
    merged = model.merge_and_unload()
    merged.config.use_cache = True  # for inference
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
