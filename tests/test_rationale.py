"""Rationale distillation: the rationale as a second task, each task's loss a mean over its own tokens (packed
and padded alike, exactly the plain loss when its weight is 0), the config keys, and a real training run whose
evaluation and serving ask for the label only."""

from pathlib import Path

import pytest

from distill.artifacts import write_json, write_rows
from distill.config import StudentConfig, load_config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.tasks import make_task
from distill.tasks.classification import ClassificationSettings
from helpers import DEMO_INPUTS, study_config, write_config
from student.data import PadCollator, make_collator
from student.distillation import SOFT_KEYS, soft_target_loss
from student.prompts import StudentPrompter
from student.rationale import (
    IGNORE_INDEX,
    RATIONALE_TASK,
    TASK_KEY,
    WEIGHT_KEY,
    TaskWeightCollator,
    rationale_pairs,
    weighted_answer_loss,
)
from teacher.rows import TEACHER_COLUMNS

LABELS = ["billing", "refund", "shipping"]
MARKER = "Explain:"


def _example(prompt: list[int], answer: list[int], task: int | None = None) -> dict:
    example = {"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer}
    return example if task is None else example | {TASK_KEY: task}


# A short label (2 tokens with EOS) and a long rationale (12 tokens): a plain token mean would weigh the rationale
# six times as much as the label.
LABEL = _example([5, 6, 7, 8], [20, 2])
RATIONALE = _example([5, 6, 7, 9], [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 2], RATIONALE_TASK)


def _collate(batch: list[dict], packed: bool, rationale_weight: float, label_weight: float = 1.0) -> dict:
    inner = make_collator(StudentConfig(model="m", packing=packed), pad_id=0)
    return TaskWeightCollator(inner, packed, label_weight, rationale_weight)(batch)


@pytest.fixture(scope="module")
def model():
    """A tiny randomly initialised Llama (no tokenizer, nothing pulled): real attention, packed or padded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=32, use_cache=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _loss(model, batch: dict) -> float:
    import torch

    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k not in ("labels", WEIGHT_KEY)}
        return float(weighted_answer_loss(model(**inputs).logits, batch["labels"], batch[WEIGHT_KEY]))


def _plain_loss(model, batch: list[dict]) -> float:
    """The model's own loss (a mean over the batch's answer tokens) on a padded batch."""
    import torch

    with torch.no_grad():
        return float(model(**PadCollator(0)([{k: x[k] for k in ("input_ids", "labels")} for x in batch])).loss)


@pytest.mark.parametrize("packed", [True, False])
def test_each_task_weighs_its_own_tokens(packed: bool) -> None:
    batch = _collate([LABEL, RATIONALE], packed, rationale_weight=0.5)
    weights, answer = batch[WEIGHT_KEY], batch["labels"] != IGNORE_INDEX
    label_part, rationale_part = weights[0, :6], (weights[0, 6:] if packed else weights[1])
    assert label_part[4:].tolist() == pytest.approx([1 / 2] * 2)  # the label's 2 tokens share weight 1
    assert rationale_part[4:16].tolist() == pytest.approx([0.5 / 12] * 12)  # the rationale's 12 share weight 0.5
    assert float(weights.sum()) == pytest.approx(1.5)
    assert not weights[~answer].any(), "prompt, separator and padding positions are out of the loss"


def test_a_batch_without_rationales_gives_the_label_task_all_of_its_weight() -> None:
    batch = _collate([LABEL, LABEL], packed=True, rationale_weight=0.5)
    assert float(batch[WEIGHT_KEY].sum()) == pytest.approx(1.0)


def test_packed_and_padded_batches_give_the_same_weighted_loss(model) -> None:
    batch = [LABEL, RATIONALE, _example([11, 12], [21, 22, 2])]
    packed, padded = (_loss(model, _collate(batch, p, rationale_weight=0.7)) for p in (True, False))
    assert packed == pytest.approx(padded, rel=1e-5)
    assert packed > 0


def test_the_loss_is_the_label_mean_plus_w_times_the_rationale_mean(model) -> None:
    # Each example alone, with the model's own loss (a mean over its tokens): L = L_label + w * L_rationale.
    expected = _plain_loss(model, [LABEL]) + 0.3 * _plain_loss(model, [RATIONALE])
    for packed in (True, False):
        assert _loss(model, _collate([LABEL, RATIONALE], packed, rationale_weight=0.3)) == pytest.approx(
            expected, rel=1e-5)
    # A plain token mean over the mixed batch is what the weighting avoids: it is dominated by the rationale.
    assert _plain_loss(model, [LABEL, RATIONALE]) != pytest.approx(expected, rel=1e-2)


def test_weight_zero_is_exactly_the_plain_label_loss(model) -> None:
    other_label = _example([11, 12, 13], [21, 22, 23, 2])
    plain = _plain_loss(model, [LABEL, other_label])
    for packed in (True, False):
        weighted = _loss(model, _collate([LABEL, RATIONALE, other_label], packed, rationale_weight=0.0))
        assert weighted == pytest.approx(plain, rel=1e-6, abs=1e-7)


def test_the_trainer_adds_knowledge_distillation_to_the_weighted_tasks(model, tmp_path: Path) -> None:
    import torch
    from transformers import TrainingArguments

    from student.loss import LossMix
    from student.trainer import StudentTrainer

    label = LABEL | {"kd_ids": [20, 21], "kd_probs": [0.75, 0.25]}
    rationale = RATIONALE | {"kd_ids": [], "kd_probs": []}  # the rationale has no soft target
    mix = LossMix(distill_weight=0.4, rationale_weight=0.3)
    collator = mix.collator(PadCollator(0), packed=False)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True)
    trainer = StudentTrainer(model=model, args=args, data_collator=collator, loss_mix=mix)
    batch = collator([label, rationale])
    with torch.no_grad():
        loss = float(trainer.compute_loss(model, dict(batch)))
        soft = {key: batch[key] for key in SOFT_KEYS}
        inputs = {k: v for k, v in batch.items() if k not in ("labels", WEIGHT_KEY, *SOFT_KEYS)}
        kd = float(soft_target_loss(model(**inputs).logits, soft))
    expected = 0.6 * _plain_loss(model, [LABEL]) + 0.3 * _plain_loss(model, [RATIONALE]) + 0.4 * kd
    assert loss == pytest.approx(expected, rel=1e-5)
    assert trainer.loss_is_scaled_for_ga is False  # a per-batch mean: the Trainer divides it for accumulation


def test_rationale_examples_use_their_own_prompt_and_skip_rows_without_one() -> None:
    task = make_task(ClassificationSettings(instruction="Route.", labels=LABELS))
    prompter = StudentPrompter(task, StudentConfig(model="m"))
    rows = [{"text": "my parcel", "rationale": " It asks where a delivery is. "}, {"text": "hi", "rationale": None},
            {"text": "oops", "rationale": "  "}]
    assert rationale_pairs(rows, prompter, "{text}\nExplain:") == [("my parcel\nExplain:",
                                                                    " It asks where a delivery is.")]
    with pytest.raises(UserError, match="no training row has a rationale.*teacher.rationale: true"):
        rationale_pairs(rows[1:], prompter, "{text}\nExplain:")


def _config(rationale: bool, **student) -> dict:
    config = study_config("m", DEMO_INPUTS, task={"instruction": "Route.", "labels": LABELS})
    config["teacher"].update(rationale=rationale, max_tokens=96, top_logprobs=0)
    config["student"].update(student)
    return config


def test_rationale_weight_needs_the_teachers_rationales(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"student\.rationale_weight > 0 .* set teacher\.rationale: true"):
        load_config(write_config(tmp_path / "c.yaml", _config(False, rationale_weight=0.5)))
    config = _config(False)
    config["variants"] = {"steps": {"rationale_weight": 1.0}}
    with pytest.raises(UserError, match=r"variants\.steps\.rationale_weight > 0 .* teacher\.rationale: true"):
        load_config(write_config(tmp_path / "v.yaml", config))
    loaded = load_config(write_config(tmp_path / "ok.yaml", _config(True, rationale_weight=0.5)))
    assert loaded.student.rationale_weight == 0.5 and loaded.student.rationale_prompt == "{text}\nExplain:"


@pytest.mark.parametrize(("prompt", "message"), [
    ("Explain:", r"student\.rationale_prompt: must contain the placeholder \{text\}"),
    ("{text} {why}", r"student\.rationale_prompt: braces other than \{text\} \(KeyError: 'why'\)"),
    ("{text}\nLabel:", r"student\.rationale_prompt is task\.student_prompt: give the rationale task a prompt")])
def test_a_rationale_prompt_that_cannot_work_is_refused(tmp_path: Path, prompt: str, message: str) -> None:
    config = _config(True, rationale_weight=0.5, rationale_prompt=prompt)
    with pytest.raises(UserError, match=message):
        load_config(write_config(tmp_path / "c.yaml", config))


def test_a_negative_rationale_weight_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"student\.rationale_weight"):
        load_config(write_config(tmp_path / "c.yaml", _config(True, rationale_weight=-1)))


def test_training_with_rationales_writes_the_adapter_and_asks_for_labels_only(tmp_path: Path, tiny_model: Path,
                                                                               monkeypatch) -> None:
    import student.trainer
    from student.serve import student_requests

    prompts: list[str] = []
    generate = student.trainer.generate_answers
    monkeypatch.setattr(student.trainer, "generate_answers",
                        lambda model, tokenizer, batch, *a: prompts.extend(batch) or generate(model, tokenizer, batch,
                                                                                               *a))
    rows = [{column: None for column in TEACHER_COLUMNS} | {
        "id": f"row-{i}", "text": f"message number {i}", "label": LABELS[i % 3],
        "rationale": None if i % 4 == 3 else f"It mentions {LABELS[i % 3]} in message {i}."} for i in range(20)]
    write_rows(tmp_path / "filter" / "train.parquet", rows[:16], TEACHER_COLUMNS)
    write_rows(tmp_path / "filter" / "eval.parquet", rows[16:], TEACHER_COLUMNS)
    for stage in ("generate", "filter"):  # what the model card reads of the stages before
        write_json(tmp_path / stage / "manifest.json", {"stage": stage, "counts": {}, "outputs": {}})
    config = _config(True, rationale_weight=1.0, epochs=1, batch_size=4, learning_rate=0.01,
                     export_merged=False, early_stopping_patience=None)
    config["teacher"]["model"] = config["student"]["model"] = str(tiny_model)
    loaded = load_config(write_config(tmp_path / "c.yaml", config))

    from student.train import train

    manifest = train(loaded, RunLayout(tmp_path))
    assert (tmp_path / "train" / "adapter" / "adapter_model.safetensors").is_file()
    assert manifest["counts"]["rationale_examples"] == 12  # the 16 training rows, less the 4 without a rationale
    assert manifest["counts"]["steps"] == 7  # (16 label + 12 rationale examples) / batch 4
    assert prompts and all(MARKER not in p and p.endswith("\nLabel:") for p in prompts)
    served = student_requests(make_task(loaded.task), loaded, [r["text"] for r in rows[16:]])
    assert all(MARKER not in request["prompt"] for request in served)
