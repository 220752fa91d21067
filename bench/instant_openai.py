"""An OpenAI-compatible server that answers instantly: what the client side of generate costs, with no model.

    python bench/instant_openai.py PORT [MODEL]

A bare asyncio protocol (uvloop where installed): it reads each HTTP/1.1 request's head and body and replies
with one fixed chat completion (label "billing", logprobs, usage) or, for `GET /v1/models`, the model list. It
keeps connections alive and serves about 20,000 requests a second on one core, so in a benchmark the client is
what is measured. It prints "ready" once listening.
"""

from __future__ import annotations

import asyncio
import json
import sys

COMPLETION = {
    "id": "instant", "object": "chat.completion", "created": 0, "model": "instant",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "billing"},
                 "logprobs": {"content": [{"token": "billing", "logprob": -0.25, "bytes": None,
                                           "top_logprobs": [{"token": "billing", "logprob": -0.25, "bytes": None}]}]}}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
}


def response(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


class Instant(asyncio.Protocol):
    def __init__(self, completion: bytes, models: bytes) -> None:
        self.completion, self.models, self.buffer = completion, models, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies = []
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = 0
            if (at := head.find(b"content-length:")) >= 0:
                length = int(head[at + 15:].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                break  # the body is still arriving
            self.buffer = self.buffer[end + 4 + length:]
            replies.append(self.models if head.startswith(b"get") else self.completion)
        if replies:
            self.transport.write(b"".join(replies))  # type: ignore[attr-defined]


async def serve(port: int, model: str) -> None:
    completion = response(json.dumps(COMPLETION).encode())
    models = response(json.dumps({"object": "list", "data": [{"id": model, "object": "model",
                                                              "root": "/instant"}]}).encode())
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Instant(completion, models), "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    await server.serve_forever()


def main() -> None:
    port, model = int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "instant"
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(port, model))
        return
    uvloop.run(serve(port, model))


if __name__ == "__main__":
    main()
