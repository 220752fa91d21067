"""Shared fixtures: a tiny randomly initialised model that vLLM serves and peft trains in seconds on a CPU."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import yaml

# No test may reach for a model hub: this machine has none, and CI must not depend on one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_INPUTS = REPO / "configs" / "data" / "support_inbox.csv"
DEMO_LABELS = ["billing", "refund", "shipping", "account_access", "technical_issue", "cancellation",
               "product_question", "feedback"]


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


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def study_config(model: str | Path, inputs: Path, **overrides: dict) -> dict:
    """A complete config dict for a small study; `overrides` replace whole sections."""
    server = {"max_model_len": 512, "cpu_kv_cache_gib": 1, "startup_timeout_s": 600}
    config = {
        "name": "tiny",
        "task": {"type": "classification", "instruction": "Route the support message.",
                 "labels": DEMO_LABELS, "student_prompt": "Message: {text}\nCategory:"},
        "data": {"inputs": str(inputs), "text_column": "text", "gold_column": "category", "test_size": 12,
                 "max_inputs": 40},
        "teacher": {"model": str(model), "concurrency": 8, "max_tokens": 8, "server": server},
        "filter": {"eval_fraction": 0.1},
        "student": {"model": str(model), "lora": {"r": 8, "alpha": 16}, "epochs": 1, "batch_size": 8,
                    "max_seq_len": 96, "server": server},
        "compare": {"concurrency": 8},
        "cost": {"teacher_price_per_hour": 2.0, "student_price_per_hour": 1.0, "train_price_per_hour": 1.0},
    }
    config.update(overrides)
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
