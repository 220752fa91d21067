"""Is an answer supported by its input? Extraction: every string value must occur in the input as a whole run of
tokens; generation: numbers and capitalised names must occur in it.

Both sides are normalised the same way first: Unicode compatibility forms and accents folded, case folded,
whitespace collapsed, and punctuation stripped from each token's ends, so "ave." matches "Ave" and "Smith," matches
"smith", while a token is never matched inside a longer one ("N" does not occur in "Nashville").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Typographic apostrophes inside a word ("O’Brien") read as the ASCII one.
APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'"})
SENTENCE_END = re.compile(r"[.!?:;]['\")\]]*$")
EXEMPT_ANNOTATION = "x-grounded"  # `"x-grounded": false` on a schema property exempts it from the check


@dataclass(frozen=True)
class Finding:
    field: str  # dotted path of the value ("address.city"; items of a list share their list's path)
    value: str


def tokens(text: str) -> list[str]:
    """The text's tokens, normalised as the module docstring says."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c)).casefold().translate(APOSTROPHES)
    return [t for t in map(strip_punctuation, folded.split()) if t]


def strip_punctuation(word: str) -> str:
    """The word without punctuation (any Unicode category P*) at either end."""
    start, end = 0, len(word)
    while start < end and unicodedata.category(word[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(word[end - 1]).startswith("P"):
        end -= 1
    return word[start:end]


class Source:
    """One input text, tokenised once, asked about many values."""

    def __init__(self, text: str, min_similarity: float | None = None) -> None:
        self.tokens = tokens(text)
        self.joined = f" {' '.join(self.tokens)} "
        self.min_similarity = min_similarity

    def contains(self, value: str) -> bool:
        wanted = tokens(value)
        if not wanted:
            return True  # only punctuation: nothing that could be made up
        phrase = " ".join(wanted)
        if f" {phrase} " in self.joined:
            return True
        return self.min_similarity is not None and self._near(phrase, len(wanted))

    def _near(self, phrase: str, size: int) -> bool:
        """A run of as many tokens (or one more or fewer: OCR splits and joins words) similar enough by
        rapidfuzz's normalised Indel ratio."""
        from rapidfuzz import fuzz

        cutoff = 100 * (self.min_similarity or 0)
        for width in {max(1, size - 1), size, size + 1}:
            for start in range(len(self.tokens) - width + 1):
                if fuzz.ratio(phrase, " ".join(self.tokens[start:start + width]), score_cutoff=cutoff):
                    return True
        return False


@dataclass(frozen=True)
class FieldRules:
    """Which values of a JSON answer must be grounded: string values, except under exempt paths or in a schema
    property that lists its values (`enum`, `const`) or says `"x-grounded": false`."""

    schema: dict[str, Any]
    exempt: tuple[str, ...] = ()
    min_similarity: float | None = None

    def ungrounded(self, answer: Any, text: str) -> list[Finding]:
        source = Source(text, self.min_similarity)
        return [Finding(path, value) for path, value in self._strings(answer, self.schema, "")
                if not source.contains(value)]

    def _strings(self, value: Any, spec: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
        if path and self._exempt(spec, path):
            return
        if isinstance(value, dict):
            for key, item in value.items():
                yield from self._strings(item, child(spec, key), f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for item in value:
                yield from self._strings(item, items(spec), path)
        elif isinstance(value, str):
            yield path, value

    def _exempt(self, spec: dict[str, Any], path: str) -> bool:
        listed = any(path == name or path.startswith(name + ".") for name in self.exempt)
        return listed or "enum" in spec or "const" in spec or spec.get(EXEMPT_ANNOTATION) is False


def _branches(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema and its anyOf/oneOf alternatives (a nullable object is often written as one)."""
    return [spec, *(b for key in ("anyOf", "oneOf") for b in spec.get(key, []) if isinstance(b, dict))]


def child(spec: dict[str, Any], key: str) -> dict[str, Any]:
    return next((b["properties"][key] for b in _branches(spec) if key in b.get("properties", {})), {})


def items(spec: dict[str, Any]) -> dict[str, Any]:
    return next((b["items"] for b in _branches(spec) if isinstance(b.get("items"), dict)), {})


def field_paths(spec: dict[str, Any], path: str = "") -> set[str]:
    """Every dotted field path a schema names (list items share their list's path)."""
    found = {path} if path else set()
    for branch in _branches(spec):
        for key, sub in branch.get("properties", {}).items():
            if isinstance(sub, dict):
                found |= field_paths(sub, f"{path}.{key}" if path else key)
        if isinstance(branch.get("items"), dict):
            found |= field_paths(branch["items"], path)
    return found


def unsupported_tokens(answer: str, text: str) -> list[str]:
    """Numbers and capitalised names in a free-text answer that its input never writes. A capitalised word
    that opens a line or a sentence is not a name, so it is not counted."""
    known = set(tokens(text))
    found = []
    for line in answer.splitlines():
        words = line.split()
        for i, word in enumerate(words):
            opens = i == 0 or bool(SENTENCE_END.search(words[i - 1]))
            stripped = strip_punctuation(word)
            name = not opens and stripped[:1].isupper() and stripped != "I"
            if (name or any(c.isdigit() for c in stripped)) and not set(tokens(stripped)) <= known:
                found.append(stripped)
    return found
