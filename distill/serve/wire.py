"""The OpenAI chat-completions wire format as `distill serve` speaks it: what a request may carry, and the
answer as a completion or as a stream of server-sent events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

_encode = msgspec.json.Encoder().encode

SYSTEM_REFUSED = ("this server applies the study's own prompts: send the task's input alone, as one user message, "
                  "with no system or developer message")


class BadRequest(Exception):
    """A request this server will not answer; the message tells the client what to send instead."""


@dataclass(frozen=True)
class Input:
    text: str
    stream: bool
    include_usage: bool


def error_response(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.Response(status=status, body=_encode(body), content_type="application/json", headers=headers)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise BadRequest("message content must be text (a string, or a list of text parts)")


def read_input(body: Any) -> Input:
    """The task's input from a chat request; a system prompt, a conversation or n > 1 is refused."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        raise BadRequest("send a JSON object with `messages`: one user message holding the task's input")
    roles = [m.get("role") if isinstance(m, dict) else None for m in body["messages"]]
    if any(role in ("system", "developer") for role in roles):
        raise BadRequest(SYSTEM_REFUSED)
    if roles != ["user"]:
        raise BadRequest(f"got messages with roles {roles}: send exactly one user message holding the task's input "
                         "(each input is answered on its own, with no conversation)")
    if body.get("n", 1) != 1:
        raise BadRequest("n must be 1: the server gives one answer per input")
    text = _text_of(body["messages"][0].get("content"))
    if not text.strip():
        raise BadRequest("the user message is empty")
    options = body.get("stream_options") or {}
    return Input(text, bool(body.get("stream")), bool(options.get("include_usage")))


def completion(request_id: str, created: int, model: str, content: str | None, usage: dict[str, int]
               ) -> bytes:
    return _encode({
        "id": request_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop",
                     "logprobs": None}],
        "usage": usage,
    })


def stream_events(request_id: str, created: int, model: str, content: str | None, usage: dict[str, int],
                  include_usage: bool) -> list[bytes]:
    """A whole answer as server-sent events: the role and the content, the finish, usage if asked, [DONE]."""
    events = [event(request_id, created, model, {"role": "assistant", "content": content or ""}),
              event(request_id, created, model, finish="stop")]
    if include_usage:
        events.append(event(request_id, created, model, usage=usage))
    return [*events, DONE]


def event(request_id: str, created: int, model: str, delta: dict[str, Any] | None = None,
          finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    """One server-sent event of our own stream: a delta, a finish, or (with `usage`) the usage chunk."""
    body: dict[str, Any] = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [] if usage is not None else [
                                {"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return b"data: " + _encode(body) + b"\n\n"


def error_event(message: str) -> bytes:
    """How a stream that cannot be finished says so (the openai client raises it as an APIError)."""
    return b"data: " + _encode({"error": {"message": message, "type": "server_error", "code": 500}}) + b"\n\n"


DONE = b"data: [DONE]\n\n"
