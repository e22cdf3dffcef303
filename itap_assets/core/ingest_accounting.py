"""Accounting at the source: what a file holds, counted independently of the parser that reads it.

Pure Python and Polars (no Dagster). `core.ingest` proves per file `records = ingested + rejected` with these
pieces, and `itap.ingest_files` keeps the proof:

* Records are counted on the bytes, not by the reader: in a file without a quote character a record is a line
  (one newline count, the cost of a memory scan). In a file with quotes a vectorised scan checks that every quote
  stands where RFC 4180 allows it (opening a cell, closing one, doubled inside one) and finds the record
  boundaries (line breaks outside quotes). Where a quote stands elsewhere — `Tuer "offen` in any column, text
  after a closing quote, a quote never closed — Polars' reader would let it swallow every later line, so Python's
  `csv` module in strict mode parses the file instead (a quote inside a cell is a character, as Excel reads it)
  and its records are the rows.
* A file is read only when complete: it ends with a line break (CSV), has not changed while it was read and was
  last modified at least `ingestion.settle_seconds` ago. Otherwise it is left for the next run (status
  `incomplete`), never half-read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

MAX_CELL_BYTES = 128 * 1024  # Python's csv field limit (csv.field_size_limit()): a cell beyond it is not telemetry
INGEST_FILES_SCHEMA = {
    "file": pl.String, "fingerprint": pl.String, "records": pl.Int64, "ingested": pl.Int64, "rejected": pl.Int64,
    "first_ts": pl.Datetime("us"), "last_ts": pl.Datetime("us"), "status": pl.String, "detail": pl.String,
}


@dataclass
class FileAccount:
    """One row of `itap.ingest_files`. status: `ingested` (records = ingested + rejected), `incomplete` (still
    being written: read by a later run) or `skipped` (a hidden file or a symbolic link, never read)."""

    file: str
    status: str = "ingested"
    fingerprint: str | None = None
    records: int | None = None
    ingested: int | None = None
    rejected: int | None = None
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    detail: str | None = None


def accounts_frame(accounts: list[FileAccount]) -> pl.DataFrame:
    return pl.DataFrame([asdict(a) for a in accounts], schema=INGEST_FILES_SCHEMA).select(*INGEST_FILES_SCHEMA)


def fingerprint(data: bytes) -> str:
    """Content hash: the same bytes under another name or date are recognisably the same file."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class Snapshot:
    size: int
    mtime_ns: int


def snapshot(path: Path) -> Snapshot:
    stat = path.stat()
    return Snapshot(stat.st_size, stat.st_mtime_ns)


def why_unsettled(before: Snapshot, after: Snapshot, settle_seconds: float, now: float | None = None) -> str | None:
    """Why a file read between the two snapshots may be incomplete; None when it is settled."""
    if after != before:
        return f"it changed while it was read (size {before.size} -> {after.size} bytes)"
    age = (time.time() if now is None else now) - before.mtime_ns / 1e9
    if age < settle_seconds:
        return f"it was modified {max(age, 0):.1f} s ago (ingestion.settle_seconds: {settle_seconds:g})"
    return None


def line_count(data: bytes) -> int:
    """Lines of a text that ends with a line break (LF or CRLF)."""
    return data.count(b"\n")


def line_text(data: bytes, lines: list[int]) -> dict[int, bytes]:
    """The bytes of the given 1-based lines (only used for the few rows that need a second look)."""
    starts = np.concatenate(([0], np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1))
    return {n: data[starts[n - 1]:starts[n] if n < len(starts) else len(data)] for n in lines if n <= len(starts)}


def record_starts(data: bytes, delimiter: str) -> np.ndarray | None:
    """First line (1-based) of every record of a CSV text with quotes, header first; None when a quote stands where
    RFC 4180 does not allow it and only the strict parser can say what the file means."""
    text = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(text == ord('"'))
    if len(quotes) % 2:
        return None
    bounds = np.array([ord(delimiter), ord("\n"), ord("\r")], dtype=np.uint8)
    before = np.where(quotes > 0, text[np.maximum(quotes - 1, 0)], ord("\n"))
    after = np.where(quotes < len(text) - 1, text[np.minimum(quotes + 1, len(text) - 1)], ord("\n"))
    pair = np.diff(quotes) == 1  # `""`: a quote inside a quoted cell
    opens_well = np.isin(before, bounds) | np.concatenate(([False], pair))
    closes_well = np.isin(after, bounds) | np.concatenate((pair, [False]))
    if not np.where(np.arange(len(quotes)) % 2 == 0, opens_well, closes_well).all():
        return None
    newlines = np.flatnonzero(text == ord("\n"))
    ends = np.flatnonzero(np.searchsorted(quotes, newlines) % 2 == 0) + 1  # lines that end a record
    return np.concatenate(([1], ends[:-1] + 1))


@dataclass
class Records:
    """A CSV text as the strict pass reads it: header, data records ([] for a blank line) and the first line
    of every record (header first), for messages."""

    header: list[str]
    rows: list[list[str]]
    starts: list[int]


class CsvProblem(ValueError):
    """A record the strict pass refuses: its first line, the 0-based cell (when known) and what is wrong."""

    def __init__(self, message: str, line: int, cell: int | None) -> None:
        super().__init__(message)
        self.line, self.cell = line, cell


def strict_records(text: str, delimiter: str) -> Records:
    """Parse with `csv` in strict mode: an unterminated quoted cell, text after a closing quote or a cell over
    128 KiB is a `CsvProblem` naming the record's first line and cell, never a silent merge of lines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[list[str]] = []
    starts: list[int] = []
    previous = 0
    try:
        for fields in reader:
            starts.append(previous + 1)
            rows.append(fields)
            previous = reader.line_num
    except csv.Error as exc:
        line = previous + 1
        first = text.splitlines()[line - 1] if line <= text.count("\n") + 1 else ""
        cell, unclosed = _offending_cell(first, delimiter)
        raise CsvProblem(_strict_reason(str(exc), unclosed), line, cell) from None
    if not rows:
        return Records([], [], [])
    return Records(rows[0], rows[1:], starts)


def header_cells(text: str, delimiter: str, lines: int = 1) -> list[str]:
    """The header, the first `lines` lines of the text (strictly parsed when quoted); a cell over 128 KiB is a
    `CsvProblem` (line 1)."""
    head = "\n".join(text.split("\n", lines)[:lines])
    if '"' in head:
        return strict_records(head + "\n", delimiter).header
    cells = head.rstrip("\r").split(delimiter)
    for i, cell in enumerate(cells):
        if len(cell.encode("utf-8", "replace")) > MAX_CELL_BYTES:
            raise CsvProblem(_strict_reason("field larger than field limit"), 1, i)
    return cells


def _strict_reason(error: str, unclosed: bool = False) -> str:
    if unclosed and ("field larger than field limit" in error or "unexpected end of data" in error):
        return "a quoted cell is never closed (an unbalanced '\"'; it would swallow every later line)"
    if "field larger than field limit" in error:
        return f"a cell is larger than {MAX_CELL_BYTES // 1024} KiB (not telemetry; check delimiter and quoting)"
    if "unexpected end of data" in error:
        return "a quoted cell runs to the end of the file (an unbalanced '\"')"
    if "expected after" in error:
        return "text follows the closing quote of a quoted cell (an unbalanced or stray '\"')"
    return f"not valid CSV ({error})"


def _offending_cell(line: str, delimiter: str) -> tuple[int | None, bool]:
    """The first cell of a record's first line that is too large or opens a quote it does not close properly,
    and whether it is an open quote never closed on that line."""
    for i, cell in enumerate(line.split(delimiter)):
        if len(cell.encode("utf-8", "replace")) > MAX_CELL_BYTES:
            return i, False
        stripped = cell.strip()
        if stripped.startswith('"'):
            closed = len(stripped) > 1 and stripped.endswith('"')
            if not closed or stripped[1:-1].replace('""', "").count('"'):
                return i, not closed and stripped.count('"') % 2 == 1
    return None, False


__all__ = ["INGEST_FILES_SCHEMA", "CsvProblem", "FileAccount", "Records", "Snapshot", "accounts_frame",
           "fingerprint", "header_cells", "line_count", "record_starts", "line_text", "snapshot", "strict_records", "why_unsettled"]
