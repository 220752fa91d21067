"""Readers for public datasets whose files are not plain tables, turned into rows of `text` and `gold`."""

from __future__ import annotations

import json
from pathlib import Path

from distill.errors import UserError


def restaurant8k(path: Path) -> list[dict]:
    """PolyAI Restaurant-8k: a user turn with slot spans, to `text` and a JSON object of slot values as `gold`.

    A turn like "13" only means something with the slot the system asked for, so that request leads the text.
    A span without `startIndex` starts at 0 (the dataset leaves it out there).
    """
    try:
        turns = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read Restaurant-8k JSON (data.format: restaurant8k): {exc}") from exc
    rows = []
    for number, turn in enumerate(turns, 1):
        try:
            text = turn["userInput"]["text"]
            slots = {label["slot"]: text[label["valueSpan"].get("startIndex", 0):label["valueSpan"]["endIndex"]]
                     for label in turn.get("labels", [])}
        except (KeyError, TypeError) as exc:
            raise UserError(f"{path}: turn {number}: not in Restaurant-8k's shape (missing {exc})") from exc
        requested = list(dict.fromkeys((turn.get("context") or {}).get("requestedSlots") or []))
        prefix = f"[asked for: {', '.join(requested)}] " if requested else ""
        rows.append({"text": prefix + text, "gold": json.dumps(slots, ensure_ascii=False)})
    return rows
