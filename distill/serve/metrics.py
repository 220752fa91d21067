"""The server's Prometheus metrics (`GET /metrics`), in a registry of its own so two servers in one process
(tests) keep separate counts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Request latencies from an instant student (~1 ms) to a slow teacher (a minute).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServeMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("distill_serve_requests", "Chat completion requests received", ["mode"], registry=r)
        self.answers = Counter("distill_serve_answers", "Answers served, by the backend that gave them",
                               ["backend"], registry=r)
        self.escalations = Counter("distill_serve_escalations", "Cascade requests handed to the teacher, by reason",
                                   ["reason"], registry=r)
        self.errors = Counter("distill_serve_errors", "Requests that got no answer, by kind", ["kind"], registry=r)
        self.backend_errors = Counter("distill_serve_backend_errors", "Failed or timed-out backend requests",
                                      ["backend"], registry=r)
        self.degraded = Counter("distill_serve_degraded", "Answers served by the student because the teacher "
                                "failed (serve.teacher_down: student)", registry=r)
        self.invalid = Counter("distill_serve_invalid_answers", "Answers invalid for the task, by backend",
                               ["backend"], registry=r)
        self.shadow = Counter("distill_serve_shadow_pairs", "Shadow mode: inputs both answered, by agreement",
                              ["agree"], registry=r)
        self.latency = Histogram("distill_serve_latency_seconds", "Time from request to answer, by backend",
                                 ["backend"], buckets=BUCKETS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
