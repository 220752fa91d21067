"""Data files read as they are written: rows of CSV/TSV, JSON Lines, JSON and Parquet files, and readers for
public datasets whose files are not plain tables.

CSV/TSV, JSON Lines and Parquet files can also be read a row at a time (`iter_rows`, for the input split); a
non-UTF-8 byte is reported at its true line and byte either way, and a byte-order mark is dropped. Cell values
keep their type: a JSON object in a JSONL or Parquet cell stays an object. A TSV file is read without quote
processing by default (tab-separated data such as SMS Spam uses `"` as plain text), so each line is one row and a
line with the wrong number of fields is an error naming it.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.errors import UserError

MAX_LISTED = 20  # problems listed in one message; the rest are counted


class DataError(UserError):
    """Every problem found in one data file, each naming the file and its row or line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = len(problems) - MAX_LISTED
        super().__init__("\n".join(problems[:MAX_LISTED]) + (f"\n... and {more} more" if more > 0 else ""))


class RowProblems:
    """Problems found in a file's rows, kept by what is wrong: 545 rows with one unknown label are one line with
    their count and first rows, not 545 lines."""

    FIRST_ROWS = 3

    def __init__(self) -> None:
        self.rows_by_problem: dict[tuple[Path, str], list[str]] = {}  # (file, what is wrong) -> where, in file order

    def add(self, path: Path, row: str, what: str) -> None:
        self.rows_by_problem.setdefault((path, what), []).append(row)

    def lines(self) -> list[str]:
        lines = []
        for (path, what), rows in self.rows_by_problem.items():
            if len(rows) == 1:
                lines.append(f"{path}: {rows[0]}, {what}")
            else:
                first = ", ".join(rows[: self.FIRST_ROWS]) + (", ..." if len(rows) > self.FIRST_ROWS else "")
                lines.append(f"{path}: {len(rows)} rows ({first}): {what}")
        return lines


@dataclass
class Table:
    rows: list[dict[str, Any]]
    lines: list[int | None]  # the line each row starts on (None for Parquet and JSON lists)
    physical_lines: int | None = None  # non-blank lines of a delimited file, header included
    notes: list[str] = field(default_factory=list)  # worth a look, not wrong (validate prints them)

    def where(self, index: int) -> str:
        return where(index, self.lines[index])


def where(index: int, line: int | None) -> str:
    """A row as a person finds it in the file: its 1-based row number, and its line where it has one."""
    return f"row {index + 1}" + (f" (line {line})" if line is not None else "")


def decode(path: Path) -> str:
    """The file's text; a BOM is dropped, and a non-UTF-8 byte is reported at its line and byte offset."""
    data = path.read_bytes()
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start  # the error's offset counts from where decoding began, after the BOM
        line = data.count(b"\n", 0, offset) + 1
        column = offset - data.rfind(b"\n", 0, offset)
        raise UserError(f"{path}: line {line}, byte {offset} (column {column}): not UTF-8 text (byte "
                        f"0x{data[offset]:02x}); re-save the file as UTF-8") from exc


def read_table(path: Path, data_format: str = "auto", header: list[str] | None = None,
               quoting: str = "auto") -> Table:
    """Rows of a CSV/TSV, JSON Lines, JSON list or Parquet file (by suffix unless `data_format` says), as dicts."""
    kind = path.suffix.lower().lstrip(".") if data_format == "auto" else data_format
    if kind in ("csv", "tsv"):
        quoted = quoting == "csv" or (quoting == "auto" and kind == "csv")
        return delimited(path, decode(path), "\t" if kind == "tsv" else ",", header, quoted)
    if kind == "jsonl":
        return json_lines(path, decode(path))
    if kind == "json":
        rows = _json(path, decode(path))
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise UserError(f"{path}: a .json input must hold a list of objects")
        return Table(rows, [None] * len(rows))
    if kind == "parquet":
        rows = parquet_file(path).read().to_pylist()
        return Table(rows, [None] * len(rows))
    if kind == "restaurant8k":
        rows = restaurant8k(path)
        return Table(rows, [None] * len(rows))
    raise UserError(f"{path}: unsupported file type {kind!r}; use .csv, .tsv, .jsonl, .json or .parquet, "
                    "or name the format in data.format")


def parquet_file(path: Path) -> Any:
    """An open Parquet file; a file that is not Parquet (a CSV renamed, a truncated copy) is a `UserError`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a Parquet file ({str(exc).split('.')[0]}); if it holds another format, give it "
                        "its own suffix (.csv, .jsonl, ...) or name the format in data.format") from exc


def delimited(path: Path, text: str, delimiter: str, header: list[str] | None, quoted: bool) -> Table:
    """Rows of a CSV/TSV text; every line with the wrong number of fields is reported, not just the first."""
    lines = Lines(io.StringIO(text, newline=""))
    rows, starts = [], []
    for row, start in delimited_rows(path, lines, delimiter, header, quoted):
        rows.append(row)
        starts.append(start)
    table = Table(rows, starts, physical_lines=lines.non_blank)
    _check_line_count(path, table, header is None, delimiter if quoted else None)
    return table


class Lines:
    """Lines of a text as the csv module reads them, counting those that are not blank as they go by."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines, self.non_blank = lines, 0

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            self.non_blank += bool(line.strip())
            yield line


def delimited_rows(path: Path, lines: Iterable[str], delimiter: str, header: list[str] | None, quoted: bool
                   ) -> Iterator[tuple[dict[str, str], int]]:
    """Each row of a CSV/TSV text with the line it starts on; the lines with the wrong number of fields are all
    reported (a `DataError`) once the text is read."""
    reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
    columns, problems, end = header, [], 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if not record:
                continue  # a blank line
            if columns is None:
                columns = _header(path, record)
            elif len(record) != len(columns):
                problems.append(f"{path}: line {start}: {len(record)} fields where the header has {len(columns)} "
                                f"({', '.join(columns)})" + (_quote_hint(delimiter) if not quoted else ""))
            else:
                yield dict(zip(columns, record, strict=True)), start
    except csv.Error as exc:
        problems.append(f"{path}: line {reader.line_num}: {exc}")
    if problems:
        raise DataError(problems)


def iter_rows(path: Path, data_format: str = "auto", header: list[str] | None = None, quoting: str = "auto"
              ) -> Iterator[tuple[dict[str, Any], int | None]]:
    """The rows `read_table` gives, each with its line, read as they come: a CSV/TSV, JSON Lines or Parquet file
    of millions of rows is never in memory at once (a JSON list is)."""
    kind = path.suffix.lower().lstrip(".") if data_format == "auto" else data_format
    if kind in ("csv", "tsv", "jsonl"):
        yield from _text_rows(path, kind, header, quoting)
    elif kind == "parquet":
        for batch in parquet_file(path).iter_batches(batch_size=4096):
            yield from ((row, None) for row in batch.to_pylist())
    else:
        table = read_table(path, data_format, header, quoting)
        yield from zip(table.rows, table.lines, strict=True)


def _text_rows(path: Path, kind: str, header: list[str] | None, quoting: str
               ) -> Iterator[tuple[dict[str, Any], int | None]]:
    # JSON Lines end at "\n" only (newline="\n"); CSV/TSV lines at any line break, kept for quoted fields.
    try:
        with open(path, encoding="utf-8-sig", newline="\n" if kind == "jsonl" else "") as handle:
            if kind == "jsonl":
                yield from json_line_rows(path, (line.removesuffix("\n") for line in handle))
                return
            quoted = quoting == "csv" or (quoting == "auto" and kind == "csv")
            lines = Lines(handle)
            count = 0
            for item in delimited_rows(path, lines, "\t" if kind == "tsv" else ",", header, quoted):
                count += 1
                yield item
            if not quoted and count != lines.non_blank - (header is None):
                raise UserError(f"{path}: {count} rows read from {lines.non_blank - (header is None)} data lines; "
                                "please report this")
    except UnicodeDecodeError:
        decode(path)  # raises the error naming the line and byte
        raise


def _header(path: Path, record: list[str]) -> list[str]:
    repeated = sorted({name for name in record if record.count(name) > 1})
    if repeated:
        raise UserError(f"{path}: line 1: the header names column(s) {repeated} more than once")
    return record


def _quote_hint(delimiter: str) -> str:
    name = "tab" if delimiter == "\t" else repr(delimiter)
    return f"; a field holding a {name} must be quoted: set data.quoting: csv if this file quotes fields"


def _check_line_count(path: Path, table: Table, has_header: bool, delimiter: str | None) -> None:
    """Rows read against lines in the file. Without quoting (`delimiter` None) they must match. With quoting a
    quoted field may span lines (valid CSV), but a stray quote mark does the same and swallows the rows after it:
    a field holding a line that reads as a whole row of this file is named for a person to look at."""
    expected = (table.physical_lines or 0) - has_header
    if len(table.rows) == expected or not table.rows:  # no rows: an empty file, reported where rows are needed
        return
    if delimiter is None:
        raise UserError(f"{path}: {len(table.rows)} rows read from {expected} data lines; please report this")
    width = len(table.rows[0])
    for index, row in enumerate(table.rows):
        for column, value in row.items():
            if any(len(next(csv.reader([line], delimiter=delimiter), [])) == width for line in value.splitlines()[1:]):
                table.notes.append(
                    f"{path}: {table.where(index)}, column {column!r} holds a line break followed by what reads as "
                    f"a whole row ({len(table.rows)} rows from {expected} lines): a stray quote mark? If quote "
                    "marks in this file are plain text, set data.quoting: none")
                return


def json_lines(path: Path, text: str) -> Table:
    rows, lines = [], []
    # Lines end at "\n" only: str.splitlines() would also split at U+2028 and other characters JSON allows raw
    # inside a string.
    for row, number in json_line_rows(path, text.split("\n")):
        rows.append(row)
        lines.append(number)
    return Table(rows, lines)


def json_line_rows(path: Path, lines: Iterable[str]) -> Iterator[tuple[dict[str, Any], int]]:
    """Each object of a JSON Lines text with its line; every bad line is reported (a `DataError`) at the end."""
    problems = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}: line {number}, column {exc.colno}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{path}: line {number}: a JSON object per line is expected, not {type(row).__name__}")
            continue
        yield row, number
    if problems:
        raise DataError(problems)


def _json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from exc


def restaurant8k(path: Path) -> list[dict]:
    """PolyAI Restaurant-8k: a user turn with slot spans, to `text` and a JSON object of slot values as `gold`.

    A turn like "13" only means something with the slot the system asked for, so that request leads the text.
    A span without `startIndex` starts at 0 (the dataset leaves it out there).
    """
    turns = _json(path, decode(path))
    if not isinstance(turns, list):
        raise UserError(f"{path}: not Restaurant-8k JSON (data.format: restaurant8k): a list of turns is expected")
    rows = []
    for number, turn in enumerate(turns, 1):
        try:
            text = turn["userInput"]["text"]
            slots = {label["slot"]: text[label["valueSpan"].get("startIndex", 0):label["valueSpan"]["endIndex"]]
                     for label in turn.get("labels", [])}
        except (KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{path}: turn {number}: not in Restaurant-8k's shape (missing {exc})") from exc
        requested = list(dict.fromkeys((turn.get("context") or {}).get("requestedSlots") or []))
        prefix = f"[asked for: {', '.join(requested)}] " if requested else ""
        rows.append({"text": prefix + text, "gold": slots})
    return rows
