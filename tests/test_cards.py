"""Model cards beside the adapter and the merged student, and a dataset card beside the training data."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distill.artifacts import damaged_outputs, hash_outputs, write_json, write_rows
from distill.config import load_config
from distill.filter.card import card_path, dataset_card
from distill.layout import RunLayout
from helpers import DEMO_INPUTS, study_config, write_config
from student.card import compared_cards, write_model_cards

TRAINING = {"steps": 12, "train_rows": 40, "eval_rows": 4, "train_loss": 0.61, "eval_loss": 0.5, "best_step": 12,
            "best_eval_task_score": 0.75}
RECOMMENDATION = {"verdict": "distil", "reason": "the student is not worse by more than the bar",
                  "rule": "non-inferiority", "quality_diff": None, "agreement": None, "queries_needed": None,
                  "student_cost_per_1k": None, "teacher_cost_per_1k": None}
METRICS = {"n_queries": 12, "task": {"quality_name": "accuracy"}, "hardware": "2-core CPU", "agreement": 0.83,
           "teacher": {"quality": 0.9, "queries_per_s": 3.4, "cost_per_1k_queries": 0.0073},
           "student": {"quality": 0.8, "queries_per_s": 48.6, "cost_per_1k_queries": 0.0005,
                       "served_as": "merged weights"}, "recommendation": RECOMMENDATION}


def _run(tmp_path: Path) -> tuple[object, RunLayout]:
    config = study_config("smollm2-135m-instruct", DEMO_INPUTS)
    config["teacher"]["model"] = "qwen2.5-coder-1.5b-instruct"
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    layout = RunLayout(tmp_path / "run")
    write_json(layout.manifest("generate"), {"counts": {"rows": 50, "labelled": 48},
                                             "outputs": {"outputs.parquet": "a" * 64}})
    write_json(layout.manifest("filter"), {"counts": {"rows_kept": 44, "train": 40, "eval": 4},
                                           "outputs": {"train.parquet": "b" * 64}})
    for folder in (layout.train.adapter, layout.train.merged):
        folder.mkdir(parents=True)
        (folder / "weights.safetensors").write_bytes(b"w")
    return loaded, layout


def _front_matter(card: Path) -> dict:
    text = card.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_cards_say_what_the_student_is_and_how_to_serve_it(tmp_path: Path) -> None:
    config, layout = _run(tmp_path)
    write_model_cards(config, layout, TRAINING)
    adapter, merged = layout.train.adapter / "README.md", layout.train.merged / "README.md"
    front = _front_matter(adapter)
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert front["library_name"] == "peft" and front["license"] == "apache-2.0" and "distill" in front["tags"]
    assert _front_matter(merged)["library_name"] == "transformers"
    text = adapter.read_text()
    assert "qwen2.5-coder-1.5b-instruct" in text, "the teacher"
    assert "b" * 64 in text and "trained on 40" in text, "the labelled data's hash and size"
    assert "| LoRA rank / alpha / dropout | 8 / 16 / 0.05 |" in text and "| train loss | 0.610 |" in text
    assert f"--enable-lora --max-lora-rank 8 --lora-modules tiny-student={layout.train.adapter.resolve()}" in text
    assert f"vllm serve {layout.train.merged.resolve()} --served-model-name tiny-student" in merged.read_text()
    assert "writes the results to `compare/report.md`" in text and "## Limits" in text


def test_compare_states_its_results_in_cards_of_its_own_and_train_hashes_its_cards(tmp_path: Path) -> None:
    config, layout = _run(tmp_path)
    write_model_cards(config, layout, TRAINING)
    train_outputs = hash_outputs(layout.train.folder, [layout.train.adapter, layout.train.merged])
    assert {"adapter/README.md", "merged/README.md"} <= train_outputs.keys(), "a card is part of what train made"
    write_json(layout.manifest("train"), {"counts": {"steps": 12}, **TRAINING, "outputs": train_outputs})
    before = (layout.train.adapter / "README.md").read_text()
    cards = compared_cards(config, layout, METRICS)
    assert set(cards) == {"adapter", "merged"}
    text = cards["adapter"]
    assert "| accuracy vs gold | 0.900 | 0.800 |" in text and "| agreement with the teacher | 1 | 0.830 |" in text
    assert "**distil**: Distil: the student can replace the teacher." in text and "| train loss | 0.610 |" in text
    assert "library_name: transformers" in cards["merged"]
    assert (layout.train.adapter / "README.md").read_text() == before, "compare leaves train's card alone"
    assert damaged_outputs(layout.train.folder, json.loads(layout.manifest("train").read_text())) == []


def test_only_the_students_train_made_get_a_compared_card(tmp_path: Path) -> None:
    config, layout = _run(tmp_path)
    write_json(layout.manifest("train"), {"outputs": hash_outputs(layout.train.folder, [layout.train.adapter])})
    assert set(compared_cards(config, layout, METRICS)) == {"adapter"}, "a merged/ an earlier training left"


def test_the_dataset_card_loads_the_splits_with_datasets(tmp_path: Path) -> None:
    from datasets import load_dataset

    config, layout = _run(tmp_path)
    rows = [{"id": str(i), "text": f"message {i}", "label": "billing"} for i in range(5)]
    write_rows(layout.filter.train, rows[:4])
    write_rows(layout.filter.eval, rows[4:])
    write_rows(layout.filter.dropped, [{**rows[0], "drop_reason": "duplicate"}])
    report = {"rows_in": 6, "rows_kept": 5, "train": 4, "eval": 1, "drops": {"duplicate": 1}}
    card = dataset_card(config, report)
    assert card == dataset_card(config, report), "no timestamps: an unchanged filter writes the same card"
    card_path(layout).write_text(card)
    data = load_dataset(str(layout.filter.folder))
    assert {name: len(split) for name, split in data.items()} == {"train": 4, "validation": 1}
    assert "| duplicate | 1 |" in card and config.teacher.model in card
