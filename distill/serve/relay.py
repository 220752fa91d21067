"""A teacher's streamed answer, relayed token by token and put back together: the client sees the tokens as
they come, the log and the recorded answers get the whole chat completion, as if it had not been streamed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode


@dataclass
class Assembled:
    """The chunks of one streamed chat completion, accumulated."""

    parts: list[str] = field(default_factory=list)
    tokens: list[dict[str, Any]] = field(default_factory=list)  # logprobs.content records
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    head: dict[str, Any] = field(default_factory=dict)  # id, created, model of the upstream answer

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one chunk; the text it adds (empty for role, finish and usage chunks)."""
        self.head = self.head or {k: chunk.get(k) for k in ("id", "created", "model")}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        text = ""
        for choice in chunk.get("choices") or []:
            text += (choice.get("delta") or {}).get("content") or ""
            self.tokens += ((choice.get("logprobs") or {}).get("content") or [])
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        self.parts.append(text)
        return text

    def response(self) -> dict[str, Any]:
        """The chat completion these chunks make, as a non-streamed request would have received it."""
        return {**self.head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self.parts)},
                             "logprobs": {"content": self.tokens} if self.tokens else None,
                             "finish_reason": self.finish_reason}],
                "usage": self.usage or {}}
