"""What both storage modes share: names checked before they become SQL or paths, partition key frames, the checks
an output passes before it is written, and chunked outputs.

Identifiers never come from data: table and schema names are checked against a strict pattern, device ids against
ID_PATTERN (they become directory names in the Parquet mode), and partition keys travel as frames, never as SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import duckdb
import polars as pl

from itap_assets.core.frames import distinct
from itap_assets.settings import ID_PATTERN

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class StorageError(RuntimeError):
    """A write or read that would corrupt or misread a table; the message names table and partition."""


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise StorageError(f"{name!r} is not a valid table or schema name (lower_snake_case, ≤ 63 chars)")
    return name


def check_column(name: str) -> str:
    """A column name that becomes a SQL identifier: letters, digits and underscores only."""
    if not _COLUMN.fullmatch(name):
        raise StorageError(f"column name {name!r} is not allowed (letters, digits, '_' only)")
    return name


def check_columns(frame: pl.DataFrame, table: str) -> None:
    bad = [c for c in frame.columns if not _COLUMN.fullmatch(c)]
    if bad:
        raise StorageError(f"table {table}: column name(s) {bad} are not allowed (letters, digits, '_' only)")


def check_device_id(device_id: str) -> str:
    if not isinstance(device_id, str) or not ID_PATTERN.fullmatch(device_id):
        raise StorageError(
            f"device id {device_id!r} is not allowed: ids match {ID_PATTERN.pattern} (letters, digits, '.', '_', '-')"
        )
    return device_id


def frame_of(relation: duckdb.DuckDBPyRelation) -> pl.DataFrame:
    """A query's rows as a Polars frame, through Arrow as DuckDB hands them over (DuckDB's own Polars output adds a
    conversion pass that costs a third of reading a wide table)."""
    return pl.from_arrow(relation.to_arrow_table(), rechunk=False)  # type: ignore[return-value]


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """A table or view of that name (the Parquet mode's tables are views over the tree)."""
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchall()[0][0]
    )


def partition_frame(days: Sequence[date] | None, devices: Sequence[str] | None) -> pl.DataFrame:
    """The key frame for a set of partitions; None for a dimension means the asset is not partitioned by it."""
    columns = {}
    if days is not None:
        columns["day"] = pl.Series("day", list(days), dtype=pl.Date)
    if devices is not None:
        columns["device_id"] = pl.Series("device_id", [check_device_id(d) for d in devices], dtype=pl.String)
    return pl.DataFrame(columns).unique(maintain_order=True)


def checked_keys(obj: pl.DataFrame, keys: pl.DataFrame | None, table: str) -> pl.DataFrame | None:
    """Check `obj` before it is written (its column names, and its rows' partitions among `keys`); return the
    partition keys of its rows (None when the output is not partitioned)."""
    check_columns(obj, table)
    if keys is None:
        return None
    key_cols = keys.columns
    missing = [c for c in key_cols if c not in obj.columns]
    if missing:
        raise StorageError(f"table {table}: output lacks partition column(s) {missing}")
    if "day" in key_cols and obj.schema["day"] != pl.Date:
        raise StorageError(f"table {table}: column 'day' must be a Date, got {obj.schema['day']}")
    own = distinct(obj, key_cols)
    stray = own.join(keys, on=key_cols, how="anti")
    if stray.height:
        raise StorageError(
            f"table {table}: output has rows for partitions outside this run's keys, e.g. {stray.row(0, named=True)}"
        )
    return own


def check_nested_types(existing: Mapping[str, object], new: Mapping[str, object], table: str,
                       nested=lambda t: str(t).startswith(("STRUCT(", "MAP(")) or str(t).endswith("]")) -> None:
    """A struct or list would be cast into a text column (and back) without a word; refuse instead, so a table
    written by an older layout is never filled with the text form of the new one. Types are DuckDB type names, or
    Polars dtypes with `nested=lambda t: t.is_nested()`."""
    for col, new_type in new.items():
        old = existing.get(col)
        if old is not None and old != new_type and (nested(old) or nested(new_type)):
            raise StorageError(
                f"table {table}: column {col} is {old} in storage but the new rows have {new_type} (the table was "
                f"written by another ITAP version or configuration): DROP TABLE {table} and materialize it again"
            )


@dataclass
class FrameChunks:
    """A partitioned output too large to hold at once, written batch by batch; each chunk holds whole partitions.
    `metadata` may be filled while the chunks are produced; the writer records it once all of them are written."""

    chunks: Iterable[pl.DataFrame]
    metadata: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[pl.DataFrame]:
        return iter(self.chunks)


def batches(chunks: Iterable[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """Consecutive chunks concatenated to at least `rows` rows: DuckDB inserts a large frame in parallel, and a
    batch still holds a small part of a large output."""
    pending: list[pl.DataFrame] = []
    size = 0
    for chunk in chunks:
        pending.append(chunk)
        size += chunk.height
        if size >= rows:
            yield pl.concat(pending, how="vertical")
            pending, size = [], 0
    if pending:
        yield pl.concat(pending, how="vertical")
