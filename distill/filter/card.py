"""`filter/README.md`: the training data as a Hugging Face dataset card.

Its front matter names the splits, so `datasets.load_dataset("<run>/filter")` loads `train` and `validation`
(and not the dropped rows). It is rendered from the filter report and the config alone, with no timestamps,
so an unchanged filter writes the same card and the stages after it stay current.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.config import Config
from distill.layout import RunLayout

CARD = "README.md"
SPLITS = [{"split": "train", "path": "train.parquet"}, {"split": "validation", "path": "eval.parquet"}]
COLUMNS = {"text": "the input", "label": "the teacher's answer in canonical form (what the student learns)",
           "gold": "a reference answer where the inputs had one (never trained on)",
           "raw": "the teacher's answer as written", "logprob": "the teacher's summed log-probability of its answer",
           "vote_share": "share of the teacher's samples agreeing (several samples only)",
           "top_logprobs": "the teacher's top alternatives per answer token (JSON)",
           "grounding": "parts of the answer its input does not support, as JSON [{field, value}] (null: none)"}


def card_path(layout: RunLayout) -> Path:
    return layout.filter.folder / CARD


def dataset_card(config: Config, report: dict[str, Any]) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(configs=[{"config_name": "default", "data_files": SPLITS}],
                           tags=["distill", "synthetic", "teacher-labelled", config.task.type],
                           task_categories=["text-generation"])
    drops = report.get("drops", {})
    # Only what filter's key covers goes in (task, filter, teacher.model): the card is a hashed output.
    lines = [f"# Training data labelled by {config.teacher.name}", "",
             f"Input rows labelled by the teacher `{config.teacher.name}` for the "
             f"`{config.task.type}` task, then filtered by `distill filter`: {report['rows_in']} rows in, "
             f"{report['rows_kept']} kept ({report['train']} train, {report['eval']} validation).", "",
             "```python", "from datasets import load_dataset", "", 'rows = load_dataset("path/to/this/folder")',
             "```", "", "## Dropped rows", "", "| reason | rows |", "|---|---|",
             *[f"| {reason} | {count} |" for reason, count in drops.items()],
             "", "`dropped.parquet` holds them with their `drop_reason`; `report.md` has the full filter report.", "",
             *(["## Grounding", "", grounding["rule"], ""] if (grounding := report.get("grounding")) else []),
             "## Columns", "", *[f"- `{name}`: {meaning}" for name, meaning in COLUMNS.items()], "",
             "## Limits", "",
             "- Labels come from a model, not from people: they carry the teacher's mistakes.",
             "- The held-out test queries are not here (`generate/test.parquet`); rows near-identical to them "
             "were dropped, so scores on them are fair.", ""]
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))
