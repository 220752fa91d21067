"""Shared fixtures: a tiny randomly initialised model that vLLM serves and peft trains in seconds on a CPU.

Every test that uses `tiny_model` is marked slow here: the model's tokenizer comes from a pulled checkpoint,
and the fast tier (`pytest` with no arguments) stays offline and quick.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach for a model hub: this machine has none, and CI must not depend on one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

NEEDS_MODEL = {"tiny_model", "served_tiny"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if NEEDS_MODEL & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _library_logs_bound_to_the_session_stderr() -> None:
    """transformers binds its log handler to whatever sys.stderr is when it first logs; inside a CliRunner test
    that stream is closed afterwards, and every later library message becomes a 'Logging error' traceback."""
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 layers, hidden size 128, head dim 64 (the CPU attention kernels reject smaller heads), with the
    SmolLM2 tokenizer so it has a real vocabulary and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distill.models import pull

    tokenizer = AutoTokenizer.from_pretrained(pull("smollm2-135m-instruct"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def served_tiny(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """One vLLM server on the tiny model for a module's tests that only need a teacher at a URL. Per module, so
    none outlives its tests (a test elsewhere checks that no server of this model is left running)."""
    from distill.config import ServerConfig
    from teacher.server import VLLMServer

    server = ServerConfig(max_model_len=1024, cpu_kv_cache_gib=1)
    log = tmp_path_factory.mktemp("server") / "server.log"
    with VLLMServer(str(tiny_model), "tiny-teacher", server, log) as vllm:
        yield vllm
