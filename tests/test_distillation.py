"""Knowledge distillation from the teacher's top-k at the answer's first token: the mapping through labels to
the student's own tokens (no shared tokenizer needed), packing, its effect on training, and where it is refused."""

import json
import math
from pathlib import Path

import pytest

from distill.artifacts import write_json, write_rows
from distill.config import StudentConfig, load_config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.tasks import make_task
from distill.tasks.classification import ClassificationSettings
from helpers import DEMO_INPUTS, DEMO_LABELS, SHARED_DATA, study_config, write_config
from student.data import encode_example, make_collator
from student.distillation import (
    SoftTargetCollator,
    first_target_ids,
    label_probabilities,
    require_soft_targets,
    soft_target,
    soft_target_loss,
)
from student.model import load_student
from student.train import train
from teacher.rows import TEACHER_COLUMNS

LABELS = ["billing", "refund", "shipping"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _task(tiny_model: Path):
    config = study_config(tiny_model, DEMO_INPUTS, task={"instruction": "Route.", "labels": LABELS})
    return make_task(load_config(write_config(tiny_model.parent / "kd.yaml", config)).task)


def _alternatives(refund: float, billing: float) -> str:
    return json.dumps([{"token": "refund", "logprob": math.log(refund)}, {"token": "billing",
                                                                         "logprob": math.log(billing)}])


def test_soft_target_maps_teacher_tokens_to_the_students_answer_start(tokenizer, tiny_model: Path) -> None:
    first_ids = first_target_ids(_task(tiny_model), tokenizer)
    ids, probs = soft_target({"top_logprobs": _alternatives(0.6, 0.2)}, first_ids)
    # The student's target is " refund" (after "Label:"), the teacher's chat answer "refund": the space is added.
    assert ids == [tokenizer(" refund", add_special_tokens=False)["input_ids"][0],
                   tokenizer(" billing", add_special_tokens=False)["input_ids"][0]]
    assert probs == pytest.approx([0.75, 0.25])
    assert soft_target({"top_logprobs": "[]"}, first_ids) == ([], [])


def test_packed_and_padded_batches_give_the_same_soft_target_loss(tokenizer, tiny_model: Path) -> None:
    import torch

    task = _task(tiny_model)
    _, model = load_student(StudentConfig(model=str(tiny_model)))
    model.eval()
    batch = []
    for text, label, alternatives in [("where is my parcel", "shipping", _alternatives(0.1, 0.2)),
                                      ("refund it please, it broke on day one", "refund", _alternatives(0.7, 0.1)),
                                      ("hi", "billing", "[]")]:
        example = encode_example(tokenizer, f"Message: {text}\nCategory:", f" {label}", max_len=64)
        example["kd_ids"], example["kd_probs"] = soft_target({"top_logprobs": alternatives},
                                                             first_target_ids(task, tokenizer))
        batch.append(example)
    losses = []
    for packing in (True, False):
        collated = SoftTargetCollator(make_collator(StudentConfig(model="m", packing=packing), 0), packing)(batch)
        soft = {k: collated.pop(k) for k in ("kd_rows", "kd_columns", "kd_ids", "kd_probs")}
        with torch.no_grad():
            losses.append(soft_target_loss(model(**collated).logits, soft))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    assert losses[0] > 0


def _first_token_preference(config, run_dir: Path, tokenizer) -> float:
    """log P(" refund") - log P(" billing") for the first answer token of an unseen message."""
    import torch
    from peft import PeftModel

    _, base = load_student(config.student)
    model = PeftModel.from_pretrained(base, run_dir / "train" / "adapter").eval()
    ids = tokenizer("Message: a brand new message\nCategory:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)
    refund, billing = (tokenizer(f" {w}", add_special_tokens=False)["input_ids"][0] for w in ("refund", "billing"))
    return float(log_probs[refund] - log_probs[billing])


@pytest.mark.slow
def test_soft_labels_pull_the_student_towards_the_teachers_distribution(tmp_path: Path, tiny_model: Path,
                                                                         tokenizer) -> None:
    # Hard labels say "billing"; the teacher's soft labels put most of their mass on "refund".
    rows = [{column: None for column in TEACHER_COLUMNS} | {
        "id": f"row-{i}", "text": f"message number {i}", "label": "billing", "top_logprobs": _alternatives(0.9, 0.1)}
        for i in range(24)]
    preference = {}
    for weight in (0.0, 1.0):
        run_dir = tmp_path / str(weight)
        write_rows(run_dir / "filter" / "train.parquet", rows[:20], TEACHER_COLUMNS)
        write_rows(run_dir / "filter" / "eval.parquet", rows[20:], TEACHER_COLUMNS)
        write_json(run_dir / "filter" / "manifest.json", {"stage": "filter", "counts": {}, "outputs": {}})
        write_json(run_dir / "generate" / "manifest.json", {"stage": "generate", "counts": {}, "outputs": {}})
        config = study_config(tiny_model, DEMO_INPUTS, task={"instruction": "Route.", "labels": LABELS})
        config["teacher"]["model"] = str(tiny_model)
        config["student"].update(epochs=3, batch_size=4, learning_rate=0.01, export_merged=False,
                                 distill_weight=weight, early_stopping_patience=None)
        loaded = load_config(write_config(run_dir / "c.yaml", config))
        train(loaded, RunLayout(run_dir))
        preference[weight] = _first_token_preference(loaded, run_dir, tokenizer)
    assert preference[0.0] < 0 < preference[1.0], preference


class GreedyTokenizer:
    """A tokenizer with a fixed vocabulary, longest match first: the student's, unlike the teacher's."""

    def __init__(self, vocabulary: list[str]) -> None:
        self.ids = {piece: i for i, piece in enumerate(vocabulary)}

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = []
        while text:
            piece = max((p for p in self.ids if text.startswith(p)), key=len, default=text[0])
            ids.append(self.ids.get(piece, -1))
            text = text[len(piece):]
        return {"input_ids": ids}


def test_teacher_tokens_map_through_labels_to_the_students_own_first_tokens() -> None:
    """The teacher wrote "cancel" (its own sub-word) for "cancellation": the student's first token of
    " cancellation" gets that mass, not its token for " cancel"; a token starting no label is left out."""
    task = make_task(ClassificationSettings(instruction="Route.", labels=["cancellation", "refund", "card_arrival",
                                                                          "card_payment"]))
    student = GreedyTokenizer([" cancel", " cancellation", " ref", " refund", " card", "_arrival", "_payment"])
    first_ids = first_target_ids(task, student)
    assert first_ids == {"cancellation": 1, "refund": 3, "card_arrival": 4, "card_payment": 4}
    teacher = json.dumps([{"token": "cancel", "logprob": math.log(0.4)}, {"token": "ref", "logprob": math.log(0.2)},
                          {"token": "card", "logprob": math.log(0.2)}, {"token": "The", "logprob": math.log(0.2)}])
    ids, probs = soft_target({"top_logprobs": teacher}, first_ids)
    assert dict(zip(ids, probs, strict=True)) == pytest.approx({1: 0.5, 3: 0.25, 4: 0.25})


def test_a_token_starting_several_labels_gives_the_answered_label_its_own_probability() -> None:
    alternatives = [{"token": " card", "logprob": math.log(0.5)}, {"token": "card_pay", "logprob": math.log(0.1)}]
    labels = ["card_arrival", "card_payment", "refund"]
    # Nothing says which label " card" meant: shared evenly.
    assert label_probabilities(alternatives, labels) == pytest.approx({"card_arrival": 0.25, "card_payment": 0.35})
    # The teacher answered card_arrival with probability 0.45: that is its share; the rest of " card" goes on.
    assert label_probabilities(alternatives, labels, "card_arrival", math.log(0.45)) == pytest.approx(
        {"card_arrival": 0.45, "card_payment": 0.15})
    # Only its first token known: the answered label keeps that token's whole share.
    assert label_probabilities(alternatives, labels, "card_arrival") == pytest.approx(
        {"card_arrival": 0.5, "card_payment": 0.1})


BUILT_IN = ("qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct")


def _built_in_tokenizer(name: str):
    from transformers import AutoTokenizer

    from distill.models import cache_root

    folder = cache_root() / "models" / name
    if not folder.is_dir():
        pytest.skip(f"{name} is not in the model cache (distill models pull {name})")
    return AutoTokenizer.from_pretrained(folder)


def _label_sets() -> dict[str, list[str]]:
    banking = SHARED_DATA / "banking77" / "categories.json"
    if not banking.exists():
        pytest.skip("../shared/data is absent")
    return {"banking77": json.loads(banking.read_text()), "demo": DEMO_LABELS}


@pytest.mark.parametrize("teacher_name", BUILT_IN)
@pytest.mark.parametrize("student_name", BUILT_IN)
def test_a_sure_teacher_gives_a_sure_target_on_every_label(teacher_name: str, student_name: str) -> None:
    """With the real tokenizers: a teacher 100% sure of a label (its first token at probability 1, four other
    labels' first tokens in its top 5 at e^-30) gives that label's student token at least 0.95, for every label
    of BANKING77 and of the demo."""
    teacher, student = _built_in_tokenizer(teacher_name), _built_in_tokenizer(student_name)
    for labels in _label_sets().values():
        task = make_task(ClassificationSettings(instruction="Route.", labels=labels))
        first_ids = first_target_ids(task, student)
        starts = {label: teacher.decode(teacher(label, add_special_tokens=False)["input_ids"][:1]) for label in labels}
        worst = 1.0
        for label in labels:
            others = [starts[other] for other in labels if starts[other] != starts[label]][:4]
            top = [{"token": starts[label], "logprob": 0.0}, *[{"token": t, "logprob": -30.0} for t in others]]
            ids, probs = soft_target({"top_logprobs": json.dumps(top), "label": label, "logprob": 0.0}, first_ids)
            worst = min(worst, dict(zip(ids, probs, strict=True)).get(first_ids[label], 0.0))
        assert worst >= 0.95, (teacher_name, student_name, worst)


def test_distillation_needs_the_teachers_top_k(tmp_path: Path) -> None:
    config = study_config("m", DEMO_INPUTS, task={"instruction": "Route.", "labels": LABELS})
    config["student"]["distill_weight"] = 0.5
    config["teacher"].update(rationale=True, max_tokens=64)
    with pytest.raises(UserError, match="student.distill_weight needs the teacher's top-k"):
        load_config(write_config(tmp_path / "c.yaml", config))


def test_the_teacher_keeps_its_sampled_first_token_beside_its_top_k() -> None:
    """Under a constraint the sampled token may be outside the top-k; its share is the answered label's."""
    from teacher.client import _logprob_summary

    chat = {"content": [{"token": "top", "logprob": -2.0, "top_logprobs": [{"token": "I", "logprob": -0.1}]},
                        {"token": "ping", "logprob": -0.5, "top_logprobs": []}]}
    total, first = _logprob_summary(chat)
    assert total == pytest.approx(-2.5)
    assert first == [{"token": "I", "logprob": -0.1}, {"token": "top", "logprob": -2.0}]
    completion = {"tokens": [" top"], "token_logprobs": [-1.5], "top_logprobs": [{" card": -0.3, " top": -1.5}]}
    assert _logprob_summary(completion)[1] == [{"token": " card", "logprob": -0.3}, {"token": " top", "logprob": -1.5}]


def test_distillation_on_answers_without_log_probabilities_is_refused() -> None:
    """Recorded answers carry none: a study variant with distill_weight > 0 sharing their labels would otherwise
    train on hard labels and be reported as distilled."""
    rows = [{"label": "billing", "top_logprobs": "[]", "logprob": None}, {"label": "refund", "top_logprobs": None}]
    with pytest.raises(UserError, match="student.distill_weight"):
        require_soft_targets(rows)
    require_soft_targets(rows + [{"label": "billing", "top_logprobs": json.dumps([{"billing": -0.1}])}])
