"""A scripted OpenAI-compatible chat endpoint for fault-injection tests (fast; real servers are tested too)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 stalls a burst of connections for a second (SYN retry)
    daemon_threads = True


class FakeEndpoint:
    """Answers chat completions with `answer`; the first `failures` requests get `status` instead.

    After `stop_after` successful answers the server shuts down, as a crashed server would.
    """

    def __init__(self, answer: str = "billing", failures: int = 0, status: int = 500,
                 stop_after: int | None = None, model: str = "fake-model", root: str = "/models/fake",
                 fail_text: str | None = None, finish_reason: str = "stop", capacity: int | None = None,
                 service_s: float = 0.0, fail_after: int | None = None,
                 script: Callable[[str], tuple[str, float]] | None = None, cut_stream_after: int | None = None) -> None:
        self.cut_stream_after = cut_stream_after  # a streamed answer breaks off after this many chunks
        self.script = script  # the input (user message or prompt) -> (answer, its log-probability)
        self.answer, self.failures, self.status, self.stop_after = answer, failures, status, stop_after
        # A simulated server limit: at most `capacity` requests are served at once, each taking `service_s`
        # seconds, the rest wait; so queries/s stop rising beyond `capacity` requests in flight.
        self.slots = threading.Semaphore(capacity) if capacity else None
        self.service_s = service_s
        self.model, self.root, self.finish_reason = model, root, finish_reason
        self.fail_text = fail_text  # requests whose user message contains this always fail with `status`
        self.fail_after = fail_after  # after this many answers every request fails with `status`
        self.requests: list[dict] = []
        self.auth_headers: list[str | None] = []
        self.answered = 0
        self.lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), self._handler())
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
            user = body["messages"][-1]["content"] if "messages" in body else ""
            if (len(self.requests) <= self.failures or (self.fail_text is not None and self.fail_text in user)
                    or (self.fail_after is not None and self.answered >= self.fail_after)):
                return self.status, {"error": {"message": "scripted failure", "code": self.status}}
            self.answered += 1
            if self.stop_after is not None and self.answered > self.stop_after:
                threading.Thread(target=self.close, daemon=True).start()
                return 503, {"error": {"message": "shutting down"}}
        if "prompt" in body:
            return 200, self._completion(body)
        return 200, self._chat(body, self.script(user)[0] if self.script else self.answer)

    def _chat(self, body: dict, answer: str) -> dict:
        return {
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": i, "finish_reason": self.finish_reason,
                         "message": {"role": "assistant", "content": answer},
                         "logprobs": {"content": [{"token": answer, "logprob": -0.25, "bytes": None,
                                                   "top_logprobs": [{"token": answer, "logprob": -0.25,
                                                                     "bytes": None}]}]}}
                        for i in range(body.get("n", 1))],
            "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
        }

    def _completion(self, body: dict) -> dict:
        """A text completion (what a student is asked), with vLLM's completion-style logprobs."""
        answer, logprob = self.script(body["prompt"]) if self.script else (self.answer, -0.25)
        return {"id": "x", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "text": answer, "finish_reason": self.finish_reason,
                             "logprobs": {"tokens": [answer], "token_logprobs": [logprob],
                                          "top_logprobs": [{answer: logprob}]}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model", "root": fake.root}]})

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.auth_headers.append(self.headers.get("Authorization"))
                if fake.slots is not None:
                    with fake.slots:
                        time.sleep(fake.service_s)
                status, payload = fake._reply(body)
                if body.get("stream") and status == 200:
                    self._stream(payload)
                else:
                    self._send(status, payload)

            def _stream(self, whole: dict) -> None:
                """The answer as vLLM streams it: a role chunk, one chunk a character, the finish, the usage."""
                choice = whole["choices"][0]
                text, head = choice["message"]["content"], {k: whole[k] for k in ("id", "created", "model")}
                record = choice["logprobs"]["content"][0]
                deltas = [({"role": "assistant", "content": ""}, None, None)] + [
                    ({"content": c}, {"content": [record] if i == 0 else []}, None) for i, c in enumerate(text)]
                chunks = [{**head, "object": "chat.completion.chunk",
                           "choices": [{"index": 0, "delta": d, "logprobs": lp, "finish_reason": f}]}
                          for d, lp, f in [*deltas, ({}, None, fake.finish_reason)]]
                chunks.append({**head, "object": "chat.completion.chunk", "choices": [], "usage": whole["usage"]})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in chunks[:fake.cut_stream_after]:
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                if fake.cut_stream_after is None:
                    self.wfile.write(b"data: [DONE]\n\n")
                self.close_connection = True

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
