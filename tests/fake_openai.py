"""A scripted OpenAI-compatible chat endpoint for fault-injection tests (fast; real servers are tested too)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeEndpoint:
    """Answers chat completions with `answer`; the first `failures` requests get `status` instead.

    After `stop_after` successful answers the server shuts down, as a crashed server would.
    """

    def __init__(self, answer: str = "billing", failures: int = 0, status: int = 500,
                 stop_after: int | None = None) -> None:
        self.answer, self.failures, self.status, self.stop_after = answer, failures, status, stop_after
        self.requests: list[dict] = []
        self.auth_headers: list[str | None] = []
        self.answered = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _reply(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            self.requests.append(body)
            if len(self.requests) <= self.failures:
                return self.status, {"error": {"message": "scripted failure", "code": self.status}}
            self.answered += 1
            if self.stop_after is not None and self.answered > self.stop_after:
                threading.Thread(target=self.close, daemon=True).start()
                return 503, {"error": {"message": "shutting down"}}
        return 200, {
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": i, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.answer},
                         "logprobs": {"content": [{"token": self.answer, "logprob": -0.25, "bytes": None,
                                                   "top_logprobs": [{"token": self.answer, "logprob": -0.25,
                                                                     "bytes": None}]}]}}
                        for i in range(body.get("n", 1))],
            "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.auth_headers.append(self.headers.get("Authorization"))
                status, payload = fake._reply(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
