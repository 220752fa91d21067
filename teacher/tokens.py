"""Counting the teacher's prompt tokens with its own tokenizer: context-length checks and dry-run estimates."""

from __future__ import annotations

from typing import Any

from distill import cost as costs
from distill.config import Config
from distill.data.inputs import Example
from distill.errors import UserError
from distill.models import resolve_model, resolve_tokenizer


def load_teacher_tokenizer(config: Config, convert: bool = True) -> Any | None:
    """The teacher's tokenizer, or None where it cannot be had (an API model with no local files). Without
    `convert` (a dry run) a model not yet converted lends its tokenizer alone."""
    from transformers import AutoTokenizer

    if config.teacher.model is None:  # recorded answers alone
        return None
    resolve = resolve_model if convert else resolve_tokenizer
    try:
        return AutoTokenizer.from_pretrained(resolve(config.teacher.model))
    except (OSError, ValueError):
        return None


def prompt_token_counts(tokenizer: Any, requests: list[dict[str, Any]]) -> list[int]:
    if not requests:
        return []
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True)
             for r in requests]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def oversize_reasons(config: Config, counts: list[int], budget: int) -> dict[int, str]:
    """Requests whose prompt plus completion budget (the `max_tokens` each request asks for) exceeds the context
    of the server we start, with why.

    A running endpoint's context is not known here: it rejects such a request, and the row records that error.
    """
    limit = config.teacher.server.max_model_len
    if config.teacher.urls or limit is None:
        return {}
    return {i: f"prompt of {n} tokens + max_tokens {budget} exceeds max_model_len {limit}"
            for i, n in enumerate(counts) if n + budget > limit}


def refuse_oversize(config: Config, examples: list[Example], over: dict[int, str]) -> None:
    """A `UserError` naming the file and first row too long for the context, unless `teacher.skip_oversize`."""
    if over and not config.teacher.skip_oversize:
        first = min(over)
        raise UserError(f"{config.data.inputs}: row {examples[first].row}: {over[first]} "
                        f"({len(over)} such rows); shorten them, raise teacher.server.max_model_len, "
                        "or set teacher.skip_oversize: true to record and skip them")


def estimate(config: Config, requests: int, prompt_tokens: int | None, prompt_chars: int, tokenizer: Any | None,
             labels: list[str] | None) -> dict[str, Any]:
    """What sending `requests` would cost: prompt tokens counted (or about 4 characters a token without the
    teacher's tokenizer), completion tokens estimated.

    A single label's length is known; any other answer (a rationale, JSON, text) is counted at teacher.max_tokens,
    an upper bound.
    """
    per_answer: float = config.teacher.max_tokens
    if prompt_tokens is not None:
        method = "teacher tokenizer"
    else:
        prompt_tokens = prompt_chars // 4
        method = "about 4 characters per token (no local tokenizer for the teacher)"
    if labels and not config.teacher.rationale:
        if tokenizer is not None:
            per_answer = sum(len(tokenizer(label, add_special_tokens=False)["input_ids"]) + 1
                             for label in labels) / len(labels)
        else:
            per_answer = sum(len(label) for label in labels) / len(labels) / 4 + 1
    completion_tokens = round(per_answer * config.teacher.samples * requests)
    dollars = costs.per_token_cost(config.cost, prompt_tokens, completion_tokens)
    return {"requests": requests, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "estimated_cost": dollars, "counted_with": method}
