"""Adapter preflight: LoRA settings vLLM cannot load are refused before training, saying what to change."""

from __future__ import annotations

import pytest

from distill.config import VLLM_MAX_LORA_RANK, load_config
from distill.errors import UserError
from helpers import REPO
from teacher.server import LORA_RANK_CHOICES

DEMO = REPO / "configs" / "demo.yaml"


@pytest.mark.parametrize(("assignment", "message"), [
    ("student.lora.modules_to_save=[lm_head]", "vLLM cannot load an adapter that trains whole modules; remove"),
    ("student.lora.target_modules=[q_proj, embed_tokens]", r"\['embed_tokens'\]: vLLM serves no LoRA on the emb"),
    ("student.lora.target_modules=[lm_head]", "target the linear layers only"),
    ("student.lora.r=600", "vLLM serves LoRA ranks up to 512; lower r"),
    ("compare.student_serving=adapter", "vLLM cannot load DoRA adapters; ship the merged student"),
])
def test_unservable_lora_settings_are_refused(assignment: str, message: str) -> None:
    overrides = ["student.lora.use_dora=true"] if "DoRA" in message else []
    with pytest.raises(UserError, match=message):
        load_config(DEMO, [*overrides, assignment])


def test_servable_settings_pass() -> None:
    config = load_config(DEMO, ["student.lora.r=512", "student.lora.modules_to_save=[]",
                                "student.lora.use_dora=true", "compare.student_serving=merged"])
    assert config.student.lora.r == 512


def test_the_rank_limit_is_the_servers() -> None:
    assert VLLM_MAX_LORA_RANK == LORA_RANK_CHOICES[-1]


def test_a_pattern_that_reaches_the_embeddings_is_refused_before_training() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from student.model import check_servable

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))
    model = get_peft_model(base, LoraConfig(r=2, target_modules=r".*(embed_tokens|q_proj)", task_type="CAUSAL_LM"))
    with pytest.raises(UserError, match=r"reaches \['model.embed_tokens'\].*use all-linear"):
        check_servable(model)
    fine = get_peft_model(LlamaForCausalLM(base.config), LoraConfig(r=2, target_modules="all-linear",
                                                                    task_type="CAUSAL_LM"))
    check_servable(fine)
