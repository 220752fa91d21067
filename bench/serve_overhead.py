"""What `distill serve` adds to a student answer: the router in front of a scripted student vs that student asked
directly, in the same run, with the same requests and the same number in flight.

    .venv/bin/python bench/serve_overhead.py     # about 45 s on 2 cores

The student is scripted, not a model, so this runs anywhere: a bare asyncio HTTP server in its own process that
answers every completion with one label and its log-probability after a fixed service time (`SERVICE_MS`, a
fast GPU-served student's latency; a model's own time would only hide the router's). The router is `distill serve`
itself, in its own process, in cascade mode (what compare recommends; the scripted student is always above the
threshold, so every answer is the student's): it parses the client's request, builds the student's prompt, asks
the student, parses and validates the answer, computes the confidence, writes the traffic line (and the input
row), then answers. The direct side sends the student exactly the request the router sends (built by its own code).

Rounds alternate direct and router (the order swapped each round) on a shared machine; per side the latencies of
all rounds are pooled. Added latency is router minus direct at p50 and p99; the throughput ratio is the median over
rounds of router over direct queries/s (each pair runs back to back, so a burst of other work skews one round
only). `router_cpu_ms_per_request` is the router process's own CPU time per answer (steadier than latency where
other work shares the cores; `load_average` says how busy the machine was, before and after). The last line is
one JSON object; its `student` says which student was measured.

    DISTILL_DEMO_RUN=runs/demo .venv/bin/python bench/serve_overhead.py   # a few minutes on 2 cores

With `DISTILL_DEMO_RUN` (a finished demo run of `configs/demo.yaml`; never written: its stage folders are linked
into a scratch folder, as bench/serve_shadow.py does) the student is the run's merged student on a vLLM server
started by the project's own code (student/serve.py, as compare and serve start it), and the router is
`distill serve --mode student` pointed at that server (`serve.student_url`), so the direct side asks the very
server the router asks, with the very body the router's backend sends. Student mode because a cascade would send
part of the traffic to the teacher, whose latency is not the router's (and the demo run may have no threshold);
per answer the router does what a cascade does for a confident student but the threshold compare. A real 135M
model on 2 cores answers tens of queries a second, so: 5 rounds of 300 a side, after one unmeasured pass through
the router (it fills vLLM's prefix cache for both sides alike).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import msgspec
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
if TYPE_CHECKING:
    from teacher.client import Target

SERVICE_MS = 20.0
IN_FLIGHT = 16
REQUESTS = 3000  # per side per round
ROUNDS = 5
DEMO_REQUESTS = 300  # a real student answers tens a second, not hundreds
LABELS = ["billing", "refund", "shipping", "account_access", "technical_issue", "cancellation", "product_question",
          "feedback"]


def _student_reply(delay_s: float) -> tuple[bytes, float]:
    body = json.dumps({"id": "s", "object": "text_completion", "created": 0, "model": "student",
                       "choices": [{"index": 0, "text": " billing", "finish_reason": "stop",
                                    "logprobs": {"tokens": [" billing"], "token_logprobs": [-0.05],
                                                 "top_logprobs": [{" billing": -0.05}]}}],
                       "usage": {"prompt_tokens": 17, "completion_tokens": 1, "total_tokens": 18}}).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    return head + body, delay_s


class ScriptedStudent(asyncio.Protocol):
    """Answers each request after the service time; requests on one connection are answered in order."""

    def __init__(self, reply: bytes, delay_s: float) -> None:
        self.reply, self.delay_s, self.buffer = reply, delay_s, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                break
            self.buffer = self.buffer[end + 4 + length:]
            asyncio.get_running_loop().call_later(self.delay_s, self._send)

    def _send(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(self.reply)  # type: ignore[attr-defined]


async def run_student(port: int) -> None:
    reply, delay = _student_reply(SERVICE_MS / 1000)
    server = await asyncio.get_running_loop().create_server(lambda: ScriptedStudent(reply, delay), "127.0.0.1",
                                                            port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def write_study(folder: Path, student_url: str) -> Path:
    """A config whose student is the scripted one, and a run folder with what compare would have written."""
    from distill.config import load_config
    from distill.layout import RunLayout

    raw = {"name": "bench", "task": {"type": "classification", "instruction": "Route the support message.",
                                     "labels": LABELS, "student_prompt": "Message: {text}\nCategory:"},
           "data": {"inputs": str(REPO / "configs" / "data" / "support_inbox.csv"), "gold_column": "category"},
           "teacher": {"model": "teacher", "url": "http://127.0.0.1:9/v1"},
           "student": {"model": "student"}, "serve": {"student_url": student_url, "log_rotate_mb": 1024},
           "cost": {"teacher_price_per_hour": 2.0, "teacher_gpus": 1, "student_price_per_hour": 1.0,
                    "train_price_per_hour": 1.0}}
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    layout = RunLayout(folder / "run")
    layout.compare.folder.mkdir(parents=True)
    layout.manifest("compare").write_text(json.dumps({"config": load_config(path).model_dump(mode="json")}))
    layout.compare.metrics.write_text(json.dumps({"headline": "merged", "recommendation": {"verdict": "cascade"},
                                                  "cascade": {"confidence": "answer_logprob", "threshold": -1.0}}))
    return path


async def load(url: str, payloads: list[bytes], headers: dict[str, str]) -> tuple[list[float], float]:
    """Every payload, IN_FLIGHT at a time; per-request latencies (ms) and queries/s."""
    latencies: list[float] = []
    queue = iter(payloads)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker() -> None:
            for payload in queue:
                start = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as response:
                    body = await response.read()
                    assert response.status == 200, (response.status, body[:300])
                latencies.append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return latencies, len(payloads) / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)


def router_bodies(config_path: Path, target: Target, texts: list[str]) -> list[bytes]:
    """The student requests as the router's student backend builds and sends them (prompt, budget, constraint)."""
    from distill.config import load_config
    from distill.serve.backends import Backend
    from distill.tasks import make_task
    from student.prompts import StudentPrompter
    from student.serve import student_request

    config = load_config(config_path)
    task = make_task(config.task)
    prompter = StudentPrompter(task, config.student)
    backend = Backend("student", target, "/completions", 1, 1)  # only its `body`: what the router sends
    return [msgspec.json.encode(backend.body(student_request(task, config, prompter(t)))) for t in texts]


def chat_requests(texts: list[str]) -> list[bytes]:
    """The same inputs as the router's client sends them."""
    return [msgspec.json.encode({"model": "bench", "messages": [{"role": "user", "content": t}]}) for t in texts]


def inbox_texts(n: int) -> list[str]:
    texts = [line.split(",")[0].strip('"') for line in
             (REPO / "configs" / "data" / "support_inbox.csv").read_text().splitlines()[1:]]
    return [f"{texts[i % len(texts)]} #{i}" for i in range(n)]


@dataclass
class Bench:
    """One student behind the router: the study serve reads, where the student answers, and the same inputs as the
    router's client sends them and as the router sends them to the student."""

    config: Path
    run: Path
    mode: str
    student_url: str
    chat: list[bytes]
    direct: list[bytes]
    warm_up: bool
    fields: dict = field(default_factory=dict)  # which student, in the result


@contextmanager
def scripted_student(scratch: Path) -> Iterator[Bench]:
    from teacher.client import Target
    from teacher.server import free_port

    port = free_port()
    student = subprocess.Popen([sys.executable, __file__, "--student", str(port)],
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert student.stdout is not None and student.stdout.readline().strip() == "ready"
        url, texts = f"http://127.0.0.1:{port}/v1", inbox_texts(REQUESTS)
        config = write_study(scratch, url)
        yield Bench(config, scratch / "run", "cascade", url, chat_requests(texts),
                    router_bodies(config, Target((url,), "student"), texts), False,
                    {"student": "scripted", "service_ms": SERVICE_MS})
    finally:
        student.terminate()
        student.wait()


@contextmanager
def demo_student(run: Path, scratch: Path) -> Iterator[Bench]:
    """The demo run's merged student on vLLM, started as compare and serve start it."""
    from serve_shadow import CONFIG, linked_copy

    from distill.config import load_config
    from distill.layout import RunLayout
    from student.serve import serve_merged

    config = load_config(CONFIG)
    copy = linked_copy(run, scratch)
    texts = inbox_texts(DEMO_REQUESTS)
    with serve_merged(config, RunLayout(copy), scratch / "student_server.log") as target:
        yield Bench(CONFIG, copy, "student", target.base_urls[0], chat_requests(texts),
                    router_bodies(CONFIG, target, texts), True,
                    {"student": f"demo merged {config.student.model} (vLLM)", "demo_run": str(run)})


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time: the router's own cost, steadier than latency on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(bench: Bench, router_url: str, router_pid: int) -> dict:
    load_before, cpu = os.getloadavg()[0], 0.0
    headers = {"Content-Type": "application/json"}
    router = router_url + "/chat/completions"
    if bench.warm_up:
        asyncio.run(load(router, bench.chat, headers))
    pooled: dict[str, list[float]] = {"direct": [], "router": []}
    rates: dict[str, list[float]] = {"direct": [], "router": []}
    for round_ in range(ROUNDS):
        sides = [("direct", bench.student_url + "/completions", bench.direct), ("router", router, bench.chat)]
        for side, url, payloads in sides if round_ % 2 == 0 else sides[::-1]:
            before = cpu_seconds(router_pid)
            latencies, rate = asyncio.run(load(url, payloads, headers))
            cpu += cpu_seconds(router_pid) - before if side == "router" else 0.0
            pooled[side] += latencies
            rates[side].append(rate)
    p = {side: {q: percentile(v, q) for q in (50, 99)} for side, v in pooled.items()}
    paired = [r / d for r, d in zip(rates["router"], rates["direct"], strict=True)]
    qps = {side: statistics.median(v) for side, v in rates.items()}
    requests = len(bench.chat) * ROUNDS
    return {**bench.fields, "router_mode": bench.mode, "in_flight": IN_FLIGHT, "requests_per_side": requests,
            "direct_p50_ms": round(p["direct"][50], 2), "direct_p99_ms": round(p["direct"][99], 2),
            "router_p50_ms": round(p["router"][50], 2), "router_p99_ms": round(p["router"][99], 2),
            "added_p50_ms": round(p["router"][50] - p["direct"][50], 2),
            "added_p99_ms": round(p["router"][99] - p["direct"][99], 2),
            "direct_qps": round(qps["direct"], 1), "router_qps": round(qps["router"], 1),
            "throughput_ratio": round(statistics.median(paired), 3), "ratio_rounds": [round(r, 3) for r in paired],
            "router_cpu_ms_per_request": round(cpu / requests * 1000, 3),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cores": os.cpu_count()}


def main() -> None:
    from serve_shadow import wait_ready

    from teacher.server import free_port

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    demo = os.environ.get("DISTILL_DEMO_RUN")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        with demo_student(Path(demo).resolve(), scratch) if demo else scripted_student(scratch) as bench:
            port = free_port()
            router = subprocess.Popen([sys.executable, "-m", "distill.cli", "serve", "-c", str(bench.config),
                                       "--run-dir", str(bench.run), "--mode", bench.mode, "--port", str(port),
                                       "--set", f"serve.student_url={bench.student_url}"], env=env, cwd=REPO)
            try:
                wait_ready(f"http://127.0.0.1:{port}/health", router, timeout_s=120)
                result = measure(bench, f"http://127.0.0.1:{port}/v1", router.pid)
            finally:
                router.terminate()
                router.wait()
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--student"]:
        asyncio.run(run_student(int(sys.argv[2])))
    else:
        main()
