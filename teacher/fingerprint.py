"""What identifies a teacher beyond its name, so no answer is reused for a different one.

A local model is identified by its content: the sha256 of its `config.json`, weight index and every weight file (or
of its GGUF file). A file is hashed once per version: the hash is remembered against its path, size, inode and
modification time, so a 16 GB checkpoint is read once, not at every run. Then what changes its outputs when we
serve it: dtype, quantization, structured-output whitespace and any extra server argument. A URL teacher is
identified by what the endpoint itself reports serving (`GET /v1/models`: the served id and, from vLLM, the model
path behind it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.artifacts import sha256_file, write_json
from distill.config import Config, TeacherConfig
from teacher.client import Endpoint, Target, api_key_from_env
from teacher.recorded import identity, key_column
from teacher.stream import run_loop

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
INDEX_FILES = ("config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def _memo_path() -> Path:
    from distill.models import cache_root

    return cache_root() / "file-hashes.json"


def file_identity(path: Path) -> str:
    """sha256 of a file's content, remembered for this version of the file (path, size, inode, mtime)."""
    stat = path.stat()
    version = f"{path.resolve()}|{stat.st_size}|{stat.st_ino}|{stat.st_mtime_ns}"
    memo_file = _memo_path()
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if version not in memo:
        memo = {k: v for k, v in memo.items() if not k.startswith(f"{path.resolve()}|")}  # older versions
        memo[version] = sha256_file(path)
        try:
            write_json(memo_file, memo)
        except OSError:
            pass  # a read-only cache only costs hashing again next time
    return memo[version]


def model_identity(path: Path) -> dict[str, str]:
    """Content hashes of a model folder's config, weight index and weight files, or of one GGUF file."""
    if path.is_file():
        return {path.name: file_identity(path)}
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.name in INDEX_FILES
                                                                 or p.suffix in WEIGHT_SUFFIXES))
    return {p.name: file_identity(p) for p in files}


def local_model_path(reference: str) -> Path | None:
    """The files of a model reference where they are on this machine already; never downloads or converts."""
    from distill.models import CATALOGUE, COMPLETE_MARKER, cache_root

    path = Path(reference).expanduser()
    if path.exists():
        return path
    pulled = cache_root() / "models" / reference
    if reference in CATALOGUE and (pulled / COMPLETE_MARKER).exists():
        return pulled
    return None


def _quantization(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith("--quantization="):
            return arg.split("=", 1)[1]
        if arg in ("--quantization", "-q") and i + 1 < len(args):
            return args[i + 1]
    return None


def local_fingerprint(teacher: TeacherConfig) -> dict[str, Any]:
    """A teacher we serve: its files' content and the server options that change what it answers."""
    server = teacher.server
    path = local_model_path(teacher.model)
    return {
        "model": model_identity(path) if path is not None else {"name": teacher.model},
        "dtype": server.dtype,
        "quantization": _quantization(server.extra_args),
        "compact_json": server.compact_json,
        "extra_args": list(server.extra_args),
    }


def endpoint_fingerprint(served_name: str, listings: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """A URL teacher: the model id each endpoint reports and, where it says (vLLM does), the weights behind it."""
    reported = sorted({(m.get("id"), m.get("root")) for models in listings.values() for m in models},
                      key=str)
    return {"served": served_name, "reported": [{"id": i, "root": r} for i, r in reported]}


def stage_fingerprint(config: Any) -> dict[str, Any]:
    """For the generate stage's key: a local teacher's fingerprint; a URL teacher's served name only, since a
    key is computed without calling the network (the run itself checks what the endpoint serves)."""
    teacher = config.teacher
    from_file = {"recorded": identity(teacher, key_column(config))} if teacher.recorded else {}
    if not teacher.live:
        return from_file
    if teacher.urls:
        return {"served": teacher.served_model_name or teacher.model, **from_file}
    return {**local_fingerprint(teacher), **from_file}


def teacher_fingerprint(config: Config) -> dict[str, Any]:
    """What generate's cache keys and manifest carry, at run time: recorded answers are known by the files'
    bytes; a live teacher beside them answers what they lack (a URL teacher is asked what it serves)."""
    teacher = config.teacher
    from_file = {"recorded": identity(teacher, key_column(config))} if teacher.recorded else {}
    if not teacher.live:
        return from_file
    return {**_live_fingerprint(config), **from_file}


def _live_fingerprint(config: Config) -> dict[str, Any]:
    teacher = config.teacher
    if not teacher.urls:
        return local_fingerprint(teacher)
    target = Target(tuple(teacher.urls), teacher.served_model_name or teacher.model,
                    api_key_from_env(teacher.api_key_env))

    async def ask() -> dict[str, list[dict[str, Any]]]:
        endpoint = Endpoint(target, teacher.request_timeout_s, teacher.max_retries)
        try:
            return await endpoint.served_models()
        finally:
            await endpoint.close()

    return endpoint_fingerprint(target.model, run_loop(ask()))
