"""Which files ingestion reads, how messages name them, and the error types of ingestion.

Pure Python (no Dagster). The globs of `ingestion.path` are matched here; hidden files and (unless
`ingestion.follow_symlinks`) files behind a symbolic link are skipped with the reason, so nothing outside what the
config names is read and nothing is skipped without a word. Messages quote at most a cell's first 40 characters.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from itap_assets.core.ingest_accounting import Snapshot, why_unsettled
from itap_assets.settings import ID_PATTERN, IngestionSettings

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
ROW = "__row"  # 0-based data record of the file (blank lines included for CSV), for error messages


class IngestError(ValueError):
    """A file (or the set of files) that cannot be ingested; the message names file, line and column."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: str | None = None) -> None:
        super().__init__(message)
        self.file, self.line, self.column = file, line, column


class IncompleteFile(IngestError):
    """A file still being written (or cut short): not read this time, the next run or sensor tick reads it."""


# --------------------------------------------------------------------------------------------------- discovery


@dataclass
class Survey:
    """What the globs match: the files to read, and the files skipped with the reason (display name -> why)."""

    files: list[Path]
    skipped: dict[str, str]


HIDDEN = "hidden (a name in its path starts with '.', as editors and copy tools name partial files); not read"
SYMLINK = "reached through a symbolic link, which ingestion.follow_symlinks: false does not follow; not read"


def survey_files(ingestion: IngestionSettings, root: Path) -> Survey:
    """Files the `path` glob(s) match, sorted and de-duplicated; CSV (.csv/.txt/.tsv) and Parquet (.parquet/.pq)
    only, other files and directories are ignored. Relative globs are relative to `root` and may not use `..`.
    Hidden files and (unless `follow_symlinks`) files behind a symbolic link are skipped, with the reason."""
    root = Path(root)
    found: set[Path] = set()
    skipped: dict[str, str] = {}
    unmatched: list[str] = []
    for pattern in ingestion.paths:
        if not pattern.strip():
            raise IngestError("ingestion.path contains an empty glob")
        if os.path.isabs(pattern):
            base = Path(_literal_prefix(pattern))
            matches = [Path(m) for m in glob.glob(pattern, recursive=True, include_hidden=True)]
            visible = {Path(m) for m in glob.glob(pattern, recursive=True)}
        else:
            if ".." in PurePosixPath(pattern.replace("\\", "/")).parts:
                raise IngestError(
                    f"ingestion.path {pattern!r} leaves the project root {root} via '..'; relative globs must stay "
                    "inside it (give an absolute path if the files really live elsewhere)"
                )
            base = root / _literal_prefix(pattern)
            matches = [root / m for m in glob.glob(pattern, root_dir=root, recursive=True, include_hidden=True)]
            visible = {root / m for m in glob.glob(pattern, root_dir=root, recursive=True)}
        readable = []
        others = set()
        skipped_here = 0
        for match in matches:
            path = Path(os.path.normpath(match))
            if not path.is_file():
                continue
            if file_kind(path) is None:
                others.add(path.suffix or path.name)
                continue
            reason = HIDDEN if match not in visible else None
            if reason is None and not ingestion.follow_symlinks and _behind_symlink(path, Path(os.path.normpath(base))):
                reason = SYMLINK
            if reason is None:
                readable.append(path)
            else:
                skipped[display_name(path, root)] = reason
                skipped_here += 1
        if not readable and not skipped_here:
            unmatched.append(f"{pattern!r}" + (f" (only {', '.join(sorted(others)[:5])} files)" if others else ""))
        found.update(readable)
    if unmatched:
        raise IngestError(
            f"ingestion.path glob(s) {', '.join(unmatched)} match no CSV ({'/'.join(CSV_SUFFIXES)}) or Parquet "
            f"({'/'.join(PARQUET_SUFFIXES)}) file under {root}"
        )
    return Survey(sorted(found), dict(sorted(skipped.items())))


def discover_files(ingestion: IngestionSettings, root: Path) -> list[Path]:
    """The files `survey_files` would read."""
    return survey_files(ingestion, root).files


def _literal_prefix(pattern: str) -> str:
    """The directories of a glob before its first wildcard: the config names them, so links there are meant."""
    parts = []
    for part in PurePosixPath(pattern.replace("\\", "/")).parts[:-1]:
        if glob.has_magic(part):
            break
        parts.append(part)
    return str(PurePosixPath(*parts)) if parts else ""


def _behind_symlink(path: Path, base: Path) -> bool:
    """Is the file, or a directory between the glob's literal prefix and it, a symbolic link?"""
    current = path
    while current != base and current != current.parent:
        if current.is_symlink():
            return True
        current = current.parent
    return False


def file_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "csv" if suffix in CSV_SUFFIXES else "parquet" if suffix in PARQUET_SUFFIXES else None


def display_name(path: Path, root: Path) -> str:
    """The file as the config sees it: relative to root (POSIX) when inside, else absolute."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()


def device_from_path(path: Path, ingestion: IngestionSettings, root: Path) -> str:
    """The device id `device_from_path` finds in the file path (relative to root, POSIX separators)."""
    assert ingestion.device_from_path is not None
    rel = display_name(Path(path), Path(root))
    match = re.search(ingestion.device_from_path, rel)
    if match is None or match.group("device") is None:
        raise IngestError(
            f"{rel}: device_from_path {ingestion.device_from_path!r} does not match this path (it is searched in "
            "the path relative to the project root, with '/' separators)", file=rel
        )
    device = match.group("device")
    if not ID_PATTERN.fullmatch(device):
        raise IngestError(
            f"{rel}: device id {device!r} taken from the path is not allowed (ids match {ID_PATTERN.pattern})",
            file=rel,
        )
    return device


@dataclass
class Source:
    """One file being read: its name for messages and how a data row maps to a line."""

    path: Path
    display: str
    kind: str
    text: str | None = None  # decoded CSV text, only used to locate lines on the error path
    delimiter: str = ","
    quoted: bool = True  # False: no quote character in the file, a record is a line
    starts: list[int] | None = field(default=None, repr=False)  # first line of every record (header first)

    def line(self, row: int) -> int:
        """1-based line of 0-based data row `row` (CSV: header = line 1; Parquet: data row number)."""
        if self.kind != "csv":
            return row + 1
        if not self.quoted or self.starts is None:
            return row + 2
        return self.starts[row + 1] if row + 1 < len(self.starts) else row + 2

    def where(self, row: int | None = None, column: str | None = None) -> str:
        parts = [self.display]
        if row is not None:
            parts.append(f"{'line' if self.kind == 'csv' else 'row'} {self.line(row)}")
        if column is not None:
            parts.append(f"column {column!r}")
        return ": ".join(parts[:1]) + (": " + ", ".join(parts[1:]) if len(parts) > 1 else "")

    def error(self, what: str, row: int | None = None, column: str | None = None) -> IngestError:
        line = self.line(row) if row is not None else None
        return IngestError(f"{self.where(row, column)}: {what}", file=self.display, line=line, column=column)


def missing_columns(source: Source, header: list[str], roles: dict[str, str]) -> IngestError | None:
    missing = [c for c in roles if c not in header]
    if not missing:
        return None
    named = ", ".join(f"{c!r} ({roles[c]})" for c in missing)
    has = _listing(header)
    hint = ""
    if source.kind == "csv" and len(header) == 1:
        other = [d for d in (";", ",", "\t", "|") if d in header[0] and d != source.delimiter]
        if other:
            hint = f" — the header is one column containing {other[0]!r}: is `delimiter: {other[0]!r}` meant?"
    where = f"{source.display}: line 1" if source.kind == "csv" else source.display
    return IngestError(f"{where}: column(s) {named} not found; the file has {has}{hint}", file=source.display,
                       line=1 if source.kind == "csv" else None, column=missing[0])


def _listing(cells: list[str], budget: int = 160) -> str:
    """Cells for a message, quoted, until `budget` characters are used; then how many there are."""
    shown: list[str] = []
    for cell in cells:
        quoted = quoted_cell(cell)
        if shown and sum(len(q) + 2 for q in shown) + len(quoted) > budget:
            return ", ".join(shown) + f", … ({len(cells)} columns)"
        shown.append(quoted)
    return ", ".join(shown)


def quoted_cell(cell: str, limit: int = 40) -> str:
    """A cell of the file in a message: at most `limit` characters (a message never carries a file's content)."""
    return repr(cell) if len(cell) <= limit else repr(cell[:limit]) + f"…({len(cell)} characters)"


def check_settled(source: Source, before: Snapshot, after: Snapshot, settle_seconds: float) -> None:
    """`IncompleteFile` unless the file stayed the same while read and is older than the settle time."""
    why = why_unsettled(before, after, settle_seconds)
    if why is not None:
        raise IncompleteFile(f"{source.display}: not read this time: {why}; the next run reads it",
                             file=source.display)
