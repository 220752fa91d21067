import json
from pathlib import Path

import pytest

from distill.config import load_config
from distill.errors import UserError
from distill.layout import RunLayout
from helpers import DEMO_INPUTS, finished_filter, study_config, write_config
from student.data import encode_example
from student.rationale import IGNORE_INDEX
from student.train import train


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_label_mask_covers_exactly_the_answer_and_eos(tokenizer) -> None:
    example = encode_example(tokenizer, "Message: where is my parcel?\nCategory:", " shipping", max_len=64)
    answer = tokenizer(" shipping", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    labelled = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != IGNORE_INDEX]
    assert labelled == answer
    n_prompt = len(example["input_ids"]) - len(answer)
    assert example["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert example["labels"][n_prompt:] == answer


def test_long_prompt_is_cut_from_the_start_and_keeps_the_answer(tokenizer) -> None:
    example = encode_example(tokenizer, "word " * 200 + "\nCategory:", " refund", max_len=32)
    assert len(example["input_ids"]) == 32
    assert example["labels"][-1] == tokenizer.eos_token_id


def test_too_short_max_len_is_refused(tokenizer) -> None:
    with pytest.raises(UserError, match="leaves no room"):
        encode_example(tokenizer, "x\nCategory:", " product_question", max_len=2)


def _filtered(run_dir: Path, train: int, held_out: int) -> None:
    """A finished filter stage: `train` training rows and `held_out` eval rows of two labels."""
    rows = [{"id": f"inputs:{i}", "text": f"message number {i}", "label": ["billing", "refund"][i % 2]}
            for i in range(train + held_out)]
    finished_filter(run_dir, rows[:train], rows[train:])


def test_training_changes_every_lora_weight_and_no_base_weight(tmp_path: Path, tiny_model: Path) -> None:
    import torch
    from safetensors.torch import load_file

    _filtered(tmp_path, train=12, held_out=4)
    config = study_config(tiny_model, DEMO_INPUTS)
    config["student"].update({"epochs": 2, "batch_size": 4, "learning_rate": 0.01})
    config["compare"] = {"student_serving": "merged"}
    manifest = train(load_config(write_config(tmp_path / "c.yaml", config)), RunLayout(tmp_path))

    adapter = load_file(tmp_path / "train" / "adapter" / "adapter_model.safetensors")
    lora_b = {k: v for k, v in adapter.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values()), "every lora_B starts at 0 and must move"
    # The merged weights minus the LoRA update must give back the base weights: training left them alone.
    base = load_file(tiny_model / "model.safetensors")
    merged = load_file(tmp_path / "train" / "merged" / "model.safetensors")
    scale = config["student"]["lora"]["alpha"] / config["student"]["lora"]["r"]
    for key_b, b in lora_b.items():
        a = adapter[key_b.replace("lora_B", "lora_A")]
        weight = key_b.removeprefix("base_model.model.").replace(".lora_B", "")
        recovered = merged[weight].float() - scale * (b.float() @ a.float())
        torch.testing.assert_close(recovered, base[weight].float(), atol=1e-5, rtol=0)
    for key in base.keys() - {k.removeprefix("base_model.model.").replace(".lora_B", "") for k in lora_b}:
        assert torch.equal(base[key].float(), merged[key].float()), key
    assert manifest["counts"] == {"train_rows": 12, "eval_rows": 4, "steps": 6, "rationale_examples": 0}
    assert manifest["eval_loss"] is not None and manifest["tokens_per_s"] > 0
    curves = json.loads((tmp_path / "train" / "curves.json").read_text())
    assert len(curves["eval"]) == 2 and all(0 <= p["task_score"] <= 1 for p in curves["eval"])
    assert (tmp_path / "train" / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "train" / "checkpoints").exists()


def test_packed_and_padded_batches_give_the_same_loss(tokenizer, tiny_model: Path) -> None:
    import torch

    from distill.config import StudentConfig
    from student.data import make_collator
    from student.model import load_student

    _, model = load_student(StudentConfig(model=str(tiny_model)))
    model.eval()
    batch = [encode_example(tokenizer, f"Message: {text}\nCategory:", f" {label}", max_len=64)
             for text, label in [("where is my parcel", "shipping"), ("refund me now please, it broke", "refund"),
                                 ("hi", "feedback"), ("my card was charged twice this month", "billing")]]
    pad_id = tokenizer.eos_token_id
    padded = make_collator(StudentConfig(model="m", packing=False), pad_id)(batch)
    packed = make_collator(StudentConfig(model="m", packing=True), pad_id)(batch)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert packed["input_ids"].numel() == sum(len(x["input_ids"]) for x in batch) < padded["input_ids"].numel()
    with torch.no_grad():
        torch.testing.assert_close(model(**packed).loss, model(**padded).loss, rtol=1e-4, atol=1e-5)
        # The traps: without restarting position ids, or with a KV cache (which makes transformers skip the
        # packed-sequence mask), the examples see each other and the loss moves.
        leaky = {k: v for k, v in packed.items() if k != "position_ids"}
        assert not torch.allclose(model(**leaky).loss, model(**padded).loss, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(model(**packed, use_cache=True).loss, model(**padded).loss, rtol=1e-4, atol=1e-5)


def test_a_score_still_rising_at_the_end_is_flagged() -> None:
    from student.curves import still_rising

    def history(*scores: float) -> dict:
        return {"train": [], "eval": [{"step": i, "task_score": s} for i, s in enumerate(scores)]}

    assert still_rising(history(0.3, 0.4, 0.5))
    assert not still_rising(history(0.3, 0.5, 0.4))  # peaked before the end
    assert not still_rising(history(0.5, 0.5))  # flat: nothing suggests more epochs help
    assert not still_rising(history(0.5))


def test_the_kept_evaluation_is_the_latest_within_one_standard_error_of_the_best() -> None:
    from student.evaluate import selection

    def kept(*evaluations: tuple[float, float]) -> int:
        """The 1-based evaluation the Trainer keeps: the last one whose selection value was a new maximum."""
        best, chosen = float("-inf"), 0
        for n, (score, error) in enumerate(evaluations):
            value = selection(list(evaluations[:n]), score, error)
            if value > best:
                best, chosen = value, n + 1
        return chosen

    assert kept((0.38, 0.05), (0.54, 0.05), (0.52, 0.05)) == 3  # two rows of 100 below: noise, trained longer
    assert kept((0.38, 0.05), (0.54, 0.05), (0.40, 0.05)) == 2  # clearly worse: the earlier one stays
    assert kept((0.60, 0.05), (0.56, 0.05), (0.50, 0.05)) == 2  # within the best's error, then not
    assert kept((0.50, 0.0), (0.49, 0.0)) == 1  # no error (one row): the strict maximum
    assert selection([(0.6, 0.05)], 0.5, 0.05) < 0 < selection([(0.6, 0.05)], 0.58, 0.05)


def test_a_retrain_leaves_no_output_of_the_earlier_training(tmp_path: Path, tiny_model: Path) -> None:
    """An old merged/ after a retrain with export_merged: false is neither hashed as the new student's nor measured
    by compare (which serves a merged student only where this training's manifest lists it)."""
    from distill.compare.contestants import trained_merged

    _filtered(tmp_path, train=8, held_out=4)
    config = study_config(tiny_model, DEMO_INPUTS)
    config["student"].update({"epochs": 1, "batch_size": 4})
    layout = RunLayout(tmp_path)
    train(load_config(write_config(tmp_path / "c.yaml", config)), layout)
    assert (tmp_path / "train" / "merged").is_dir() and trained_merged(layout)

    config["student"]["export_merged"] = False
    config["compare"] = {"student_serving": "adapter"}
    manifest = train(load_config(write_config(tmp_path / "c.yaml", config)), layout)
    assert not (tmp_path / "train" / "merged").exists()
    assert not any(name.startswith("merged/") for name in manifest["outputs"]) and not trained_merged(layout)
    # A merged/ copied in afterwards (or left by a crash) is still not this training's: compare skips it.
    (tmp_path / "train" / "merged").mkdir()
    assert not trained_merged(layout)
