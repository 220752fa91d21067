"""How long each training sequence is in the student's own tokens: its prompt (in its chat template with
`prompt_format: chat`), the answer and EOS, counted as student/train.py encodes them. Training keeps the answer
and cuts the start of a longer prompt, so `init` sizes `student.max_seq_len` from these lengths and `validate`
says how many inputs a config would cut.

Only the tokenizer is loaded (about a second), and only from a local copy: a catalogue model not yet pulled, a
GGUF file not yet converted or a hub id is not fetched for this, and nothing is counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.config import StudentConfig
from distill.models import CATALOGUE, COMPLETE_MARKER, cache_root
from distill.tasks import Task

MAX_PROPOSED = 4096  # init proposes no longer sequences: memory in training grows with them
QUANTUM = 32  # proposed lengths are rounded up to a multiple of this


def load_tokenizer(model: str) -> Any | None:
    from transformers import AutoTokenizer

    pulled = cache_root() / "models" / model
    folder = pulled if model in CATALOGUE and (pulled / COMPLETE_MARKER).exists() else Path(model).expanduser()
    if not folder.is_dir():
        return None
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception:  # noqa: BLE001 - a folder without a tokenizer: lengths are not counted, nothing else fails
        return None


def sequence_lengths(task: Task, student: StudentConfig, texts: Sequence[str], answers: Sequence[str | None],
                     tokenizer: Any) -> list[int]:
    """Tokens of each (text, answer) as the student trains on it; an unknown answer counts as empty."""
    prompts = [task.student_prompt(t) for t in texts]
    if student.prompt_format == "chat" and getattr(tokenizer, "chat_template", None):
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    prompt_ids = tokenizer(list(prompts))["input_ids"]
    targets = [task.student_target(a) if a is not None else "" for a in answers]
    answer_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    return [len(p) + len(a) + 1 for p, a in zip(prompt_ids, answer_ids, strict=True)]  # + EOS


def proposed_max_len(lengths: Sequence[int]) -> int:
    """The longest sequence, rounded up, so that no input is cut (within `MAX_PROPOSED`)."""
    longest = max(lengths, default=QUANTUM)
    return min(MAX_PROPOSED, max(2 * QUANTUM, math.ceil(longest / QUANTUM) * QUANTUM))


def cut_note(where: str, lengths: Sequence[int], max_len: int) -> str | None:
    """What `validate` says where some sequences are longer than `student.max_seq_len`."""
    cut = sorted(n for n in lengths if n > max_len)
    if not cut:
        return None
    return (f"{where}: {len(cut)} of {len(lengths)} rows are longer than student.max_seq_len={max_len} in the "
            f"student's tokens (longest {cut[-1]}): training cuts the start of their prompts; "
            f"student.max_seq_len: {proposed_max_len(lengths)} keeps them whole")
