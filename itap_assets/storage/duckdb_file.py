"""The DuckDB mode: every table in one DuckDB file, one writer process at a time (the embedded default).

Replace and read `(day, device_id)` partitions of a table, append to the ledgers, keep the operator views current.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from itap_assets.core.frames import in_keys, sorted_by
from itap_assets.ledgers import LEDGERS
from itap_assets.storage.common import (FrameChunks, StorageError, batches, check_column, check_columns,
                                        check_identifier, check_nested_types, checked_keys, frame_of, table_exists)
from itap_assets.views import VIEWS

LOCK_TIMEOUT_S = 300.0
# DuckDB's own buffer budget (default: 80 % of RAM); beyond it DuckDB spills to disk. Polars frames are extra.
MEMORY_LIMIT = os.environ.get("ITAP_DUCKDB_MEMORY_LIMIT", "1GB")


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


def _disk_full(path: Path, exc: duckdb.Error) -> StorageError | None:
    """DuckDB's error for a full disk, headlined as such and naming the database file (DuckDB names the file it
    failed to write, often the WAL, at the end of a longer message)."""
    if "no space left on device" not in str(exc).lower():
        return None
    return StorageError(f"disk full: cannot write the database file {path}; free space on its disk and re-run "
                        f"(DuckDB: {exc})")


@contextmanager
def connect(path: Path | str, *, read_only: bool = False, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[
    duckdb.DuckDBPyConnection
]:
    """Open the database file, retrying with jittered backoff while another process holds its lock."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config={"memory_limit": MEMORY_LIMIT})
            break
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                raise _disk_full(path, exc) or exc
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    try:
        try:
            yield con
        finally:
            con.close()
    except duckdb.Error as exc:
        full = _disk_full(path, exc)
        if full is None:
            raise
        raise full from exc


def _table_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> dict[str, str]:
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?"
        " ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    return dict(rows)


def replace_partitions(path: Path | str, schema: str, table: str, obj: pl.DataFrame | FrameChunks,
                       keys: pl.DataFrame | None, batch_rows: int) -> int:
    """Replace the rows of the given partitions (all rows when keys is None) with `obj`, a frame or the chunks of
    one. Returns the rows written.

    Every partition is replaced atomically: a crash leaves its old rows or its new rows, never half. A frame is
    written in one transaction; chunks in one transaction per batch of whole partitions (DuckDB keeps every
    frame scanned inside a transaction in memory until the commit, so one transaction would hold the whole
    output again).
    """
    check_identifier(schema)
    check_identifier(table)
    with connect(path) as con:
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        if isinstance(obj, pl.DataFrame):
            checked_keys(obj, keys, table)
            rows = _replace(con, schema, table, obj, keys)
        else:
            rows = _replace_chunks(con, schema, table, obj, keys, batch_rows)
        ensure_views(con, schema, table)
    return rows


def _replace_chunks(con: duckdb.DuckDBPyConnection, schema: str, table: str, chunks: FrameChunks,
                    keys: pl.DataFrame | None, batch_rows: int) -> int:
    """One transaction per batch of whole partitions; the run's partitions that got no rows are emptied last."""
    if keys is None:
        raise StorageError(f"table {table}: only a partitioned output can be written in chunks")
    # Without insertion order, DuckDB compresses a batch's row groups on every thread (2-3x faster). Rows of a
    # batch may then land out of order: readers restore it (`sorted_by`). Frame outputs keep insertion order.
    con.execute("SET preserve_insertion_order = false")
    # Only partitions that hold rows need a DELETE (a first materialization deletes nothing): found in one scan.
    stored = _stored_keys(con, schema, table, keys)
    rows = 0
    written = keys.clear()
    for batch in batches(chunks, batch_rows):
        batch_keys = checked_keys(batch, keys, table)
        if batch_keys.join(written, on=keys.columns, how="semi").height:
            raise StorageError(f"table {table}: a partition spans two chunks (chunks must hold whole partitions)")
        rows += _replace(con, schema, table, batch, batch_keys.join(stored, on=keys.columns, how="semi"))
        written = pl.concat([written, batch_keys])
    emptied = stored.join(written, on=keys.columns, how="anti")
    if emptied.height:
        _replace(con, schema, table, None, emptied)
    return rows


def _among(con: duckdb.DuckDBPyConnection, keys: pl.DataFrame) -> str:
    """SQL condition: the row's partition is one of `keys` (registered on `con` for the statement)."""
    con.register("_itap_keys", keys)
    cols = ", ".join(keys.columns)
    return f"({cols}) IN (SELECT {cols} FROM _itap_keys)"


def _stored_keys(con: duckdb.DuckDBPyConnection, schema: str, table: str, keys: pl.DataFrame) -> pl.DataFrame:
    """The partitions among `keys` that have rows in the table."""
    if not table_exists(con, schema, table):
        return keys.clear()
    cols = ", ".join(keys.columns)
    stored = frame_of(con.sql(f'SELECT DISTINCT {cols} FROM "{schema}"."{table}" WHERE {_among(con, keys)}'))
    return stored.cast(keys.schema)


def _replace(con: duckdb.DuckDBPyConnection, schema: str, table: str, frame: pl.DataFrame | None,
             keys: pl.DataFrame | None) -> int:
    """One transaction: delete the partitions `keys` (every row when None, none when empty) and append `frame`, whose
    columns and rows the caller checked (the first frame creates the table; a new column is added)."""
    qualified = f'"{schema}"."{table}"'
    con.execute("BEGIN TRANSACTION")
    try:
        exists = table_exists(con, schema, table)
        if exists:
            if keys is None:
                con.execute(f"DELETE FROM {qualified}").fetchall()
            elif keys.height:
                con.execute(f"DELETE FROM {qualified} WHERE {_among(con, keys)}").fetchall()
        if frame is not None:
            con.register("_itap_new", frame)
            if not exists:
                con.execute(f"CREATE TABLE {qualified} AS SELECT * FROM _itap_new").fetchall()
            else:
                existing = _table_columns(con, schema, table)
                types = {r[0]: r[1] for r in con.execute("DESCRIBE SELECT * FROM _itap_new").fetchall()}
                check_nested_types(existing, types, f"{schema}.{table}")
                for col in [c for c in frame.columns if c not in existing]:
                    con.execute(f'ALTER TABLE {qualified} ADD COLUMN "{col}" {types[col]}')
                con.execute(f"INSERT INTO {qualified} BY NAME SELECT * FROM _itap_new").fetchall()
        con.execute("COMMIT")
    except Exception:
        _rollback(con)
        raise
    return frame.height if frame is not None else 0


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back unless DuckDB already has: a COMMIT that failed (a full disk) ends the transaction, and "cannot
    rollback - no transaction is active" would then hide the error that happened."""
    try:
        con.execute("ROLLBACK")
    except duckdb.TransactionException as exc:
        if "no transaction is active" not in str(exc):
            raise


def ensure_ledgers(con: duckdb.DuckDBPyConnection, schema: str, tables: Iterable[str] = tuple(LEDGERS)) -> None:
    """Create those of the append-only tables (operator actions, notification outbox) that do not exist yet."""
    for table in tables:
        con.execute(f'CREATE TABLE IF NOT EXISTS "{check_identifier(schema)}"."{check_identifier(table)}" '
                    f'({LEDGERS[table]})').fetchall()


@contextmanager
def open_ledgers(path: Path | str, schema: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection on which the append-only tables exist; the views that read them are refreshed."""
    with connect(path) as con:
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{check_identifier(schema)}"').fetchall()
        ensure_ledgers(con, schema)
        for table in LEDGERS:
            ensure_views(con, schema, table)
        yield con


def append_rows(con: duckdb.DuckDBPyConnection, schema: str, table: str, frame: pl.DataFrame) -> int:
    """Append `frame` to an append-only table by column name, in one statement (all rows or none; a row whose
    primary key exists fails the statement)."""
    if table not in LEDGERS:
        raise StorageError(f"table {table} is not append-only (append-only tables: {', '.join(LEDGERS)})")
    check_columns(frame, table)
    con.register("_itap_append", frame)
    con.execute(f'INSERT INTO "{check_identifier(schema)}"."{table}" BY NAME SELECT * FROM _itap_append').fetchall()
    con.unregister("_itap_append")
    return frame.height


def ensure_views(con: duckdb.DuckDBPyConnection, schema: str, changed_table: str) -> None:
    """(Re)create the operator views that read `changed_table`, once all the tables they read exist (append-only
    tables such a view reads are created first: it may read them before anything was appended)."""
    for name, (tables, build) in VIEWS.items():
        if changed_table not in tables:
            continue
        ensure_ledgers(con, schema, [t for t in tables if t in LEDGERS])
        if not all(table_exists(con, schema, t) for t in tables):
            continue
        columns = {t: list(_table_columns(con, schema, t)) for t in tables}
        con.execute(f'CREATE OR REPLACE VIEW "{schema}"."{name}" AS {build(columns)}')


def read_partitions(path: Path | str, schema: str, table: str, keys: pl.DataFrame | None) -> pl.DataFrame:
    """Rows of the given partitions (all rows when keys is None), ordered by partition and time."""
    check_identifier(schema)
    check_identifier(table)
    with connect(path, read_only=False) as con:
        if not table_exists(con, schema, table):
            raise StorageError(
                f"table {schema}.{table} does not exist in {path}: materialize asset '{table}' first"
            )
        existing = _table_columns(con, schema, table)
        order = [c for c in ("device_id", "day", "ts") if c in existing]
        qualified = f'"{schema}"."{table}"'
        if keys is None:
            return sorted_by(frame_of(con.sql(f"SELECT * FROM {qualified}")), order)
        if keys.height == 0:
            return frame_of(con.sql(f"SELECT * FROM {qualified} LIMIT 0"))
        # Range predicates keep DuckDB's scan order, which a join with the keys (or a list lookup) does not: a
        # sort would then cost more than the read. The exact set of keys is then a filter in Polars.
        where = " AND ".join(f'"{c}" BETWEEN ? AND ?' for c in keys.columns)
        params = [bound for c in keys.columns for bound in (keys[c].min(), keys[c].max())]
        rows = frame_of(con.sql(f"SELECT * FROM {qualified} WHERE {where}", params=params))
        return sorted_by(rows.filter(in_keys(keys)), order)


def update_row(con: duckdb.DuckDBPyConnection, schema: str, table: str, key: dict[str, object],
               values: dict[str, object]) -> None:
    """Set `values` on the ledger row whose primary key is `key` (a delivery's outcome in the outbox)."""
    sets = ", ".join(f'"{check_column(c)}" = ?' for c in values)
    where = " AND ".join(f'"{check_column(c)}" = ?' for c in key)
    con.execute(f'UPDATE "{check_identifier(schema)}"."{check_identifier(table)}" SET {sets} WHERE {where}',
                [*values.values(), *key.values()]).fetchall()
