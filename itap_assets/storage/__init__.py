"""Storage of the asset tables, in the mode `storage.mode` of the settings chooses (docs/deployment.md):

- `duckdb` (the default): every table in one DuckDB file, ITAP_DB_PATH (`duckdb_file`);
- `parquet`: one Parquet file per partition under `storage.root` (`parquet_tree`), SQL through DuckDB views over
  the files (`catalog`), ITAP_DB_PATH naming the catalog file.

Every function takes the database path as the rest of ITAP passes it; the mode is resolved here, at each call:
the path is the Parquet mode's catalog when the settings (ITAP_CONFIG) say `parquet` and the path is ITAP_DB_PATH.
Any other path is a DuckDB file, so tests and tools that name their own file keep the DuckDB mode. Kept free of
Dagster, so the IO manager stays a thin adapter; `core/` knows nothing of storage.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from itap_assets.ledgers import LEDGERS, ledger_key
from itap_assets.settings import PROJECT_ROOT, config_path, db_path, load_settings
from itap_assets.storage import catalog, duckdb_file
from itap_assets.storage.common import (FrameChunks, StorageError, check_column, check_columns, check_device_id,
                                        check_identifier, frame_of, partition_frame, table_exists)
from itap_assets.storage.duckdb_file import LOCK_TIMEOUT_S, MEMORY_LIMIT, ensure_ledgers, ensure_views
from itap_assets.storage.parquet_tree import ParquetTree
from itap_assets.views import VIEWS

__all__ = [
    "FrameChunks", "LOCK_TIMEOUT_S", "MEMORY_LIMIT", "ParquetTree", "StorageError", "WRITE_BATCH_ROWS", "append_rows",
    "check_column", "check_columns", "check_device_id", "check_identifier", "connect", "ensure_ledgers",
    "ensure_views", "frame_of", "has_table", "open_ledgers", "partition_frame", "read_partitions",
    "replace_partitions", "sql_session", "table_exists", "tree_for", "update_row",
]

WRITE_BATCH_ROWS = 1_000_000  # DuckDB mode: rows per INSERT when an output comes in chunks


@lru_cache(maxsize=8)
def _configured_tree(config: str, mtime_ns: int) -> ParquetTree | None:
    """The settings' tree, read again when the file changes (one instance per file version: it caches layouts)."""
    settings = load_settings(config).storage
    if settings.mode != "parquet":
        return None
    return ParquetTree.at(settings.root, settings.storage_options, PROJECT_ROOT)


def tree_for(path: Path | str) -> ParquetTree | None:
    """The Parquet tree whose catalog `path` is, or None when `path` is a DuckDB-mode file."""
    config = config_path()
    tree = _configured_tree(str(config), config.stat().st_mtime_ns if config.exists() else 0)
    if tree is None or Path(path).resolve() != db_path().resolve():
        return None
    return tree


@contextmanager
def connect(path: Path | str, *, read_only: bool = False, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[
    duckdb.DuckDBPyConnection
]:
    """A connection on which every table and view reads by its name: the DuckDB file (retried while another
    process holds its lock), or in the Parquet mode an in-memory session over the tree (never waits)."""
    tree = tree_for(path)
    if tree is None:
        with duckdb_file.connect(path, read_only=read_only, timeout_s=timeout_s) as con:
            yield con
        return
    with catalog.session(tree, Path(path).stem) as con:
        yield con


@contextmanager
def sql_session(path: Path | str) -> Iterator[tuple[duckdb.DuckDBPyConnection, Callable[[str], None]]]:
    """`connect` for queries not known in advance, and `prepare(sql)` to call before each (one thread at a time): a
    Parquet-mode session then makes only the views its queries name (making a view reads the footers of all its
    files), a DuckDB-mode one has nothing to prepare."""
    tree = tree_for(path)
    if tree is None:
        with duckdb_file.connect(path) as con:
            yield con, lambda sql: None
        return
    with catalog.session(tree, Path(path).stem, views=False) as con:
        made: set[str] = set()

        def prepare(sql: str) -> None:
            names = catalog.needed(set(re.findall(r"[a-z_][a-z0-9_]*", sql.lower()))) - made
            if names:
                catalog.create_views(con, tree, names)
                made.update(names)

        yield con, prepare


def replace_partitions(path: Path | str, schema: str, table: str, obj: pl.DataFrame | FrameChunks,
                       keys: pl.DataFrame | None) -> int:
    """Replace the rows of the given partitions (all rows when keys is None) with `obj`, a frame or the chunks of
    one, each partition atomically. Returns the rows written."""
    check_identifier(schema)
    tree = tree_for(path)
    if tree is None:
        return duckdb_file.replace_partitions(path, schema, table, obj, keys, WRITE_BATCH_ROWS)
    rows, changed = tree.replace_partitions(table, obj, keys)
    if changed or not Path(path).exists():
        _refresh(tree, path, table)
    return rows


def read_partitions(path: Path | str, schema: str, table: str, keys: pl.DataFrame | None) -> pl.DataFrame:
    """Rows of the given partitions (all rows when keys is None), ordered by partition and time."""
    check_identifier(schema)
    check_identifier(table)
    tree = tree_for(path)
    if tree is None:
        return duckdb_file.read_partitions(path, schema, table, keys)
    fs = tree.snapshot_fs()
    with catalog.connection(tree, fs=fs) as con:
        return tree.read_partitions(con, fs, table, keys, where=f"{tree.url} (schema {schema})")


def has_table(path: Path | str, schema: str, table: str) -> bool:
    """Whether the table, ledger or operator view exists (in the Parquet mode: has files, or its tables do)."""
    tree = tree_for(path)
    if tree is None:
        with duckdb_file.connect(path) as con:
            return table_exists(con, schema, check_identifier(table))
    if table in VIEWS:
        return all(has_table(path, schema, t) for t in VIEWS[table][0])
    if table in LEDGERS:
        return tree.has_ledger(table)
    return tree.key_columns(check_identifier(table)) is not None


def _refresh(tree: ParquetTree, path: Path | str, table: str) -> None:
    """The ledgers' schema files (views such as v_alerts read a ledger before anything was appended), then the
    catalog file's views of `table` (and of the ledgers, when just made)."""
    with catalog.connection(tree) as con:
        made = tree.ensure_ledgers(con)
    catalog.refresh_catalog(tree, path, [table, *(LEDGERS if made else ())])


@contextmanager
def open_ledgers(path: Path | str, schema: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection on which the append-only tables exist; the views that read them are refreshed."""
    tree = tree_for(path)
    if tree is None:
        with duckdb_file.open_ledgers(path, schema) as con:
            yield con
        return
    with catalog.session(tree, Path(path).stem) as con:
        if tree.ensure_ledgers(con) or not Path(path).exists():
            catalog.create_views(con, tree, LEDGERS, dependents=True)
            catalog.refresh_catalog(tree, path, LEDGERS)
        yield con


def _ledger(table: str) -> str:
    if table not in LEDGERS:
        raise StorageError(f"table {table} is not append-only (append-only tables: {', '.join(LEDGERS)})")
    return table


def _ledger_rows(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> pa.Table:
    """`frame` as rows of the ledger: its DDL's types, NOT NULL and CHECK constraints, and a key unique among them."""
    check_columns(frame, table)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _itap_ledger_rows ({LEDGERS[table]})")
    con.register("_itap_append", frame)
    try:
        con.execute("INSERT INTO _itap_ledger_rows BY NAME SELECT * FROM _itap_append").fetchall()
    finally:
        con.unregister("_itap_append")
    return con.sql("SELECT * FROM _itap_ledger_rows").to_arrow_table()


def append_rows(con: duckdb.DuckDBPyConnection, schema: str, table: str, frame: pl.DataFrame) -> int:
    """Append `frame` to an append-only table by column name, all rows or none; a row whose primary key exists
    fails (DuckDB's ConstraintException in both modes). In the Parquet mode the rows become one new file."""
    tree = catalog.tree_of(con)
    if tree is None:
        return duckdb_file.append_rows(con, schema, table, frame)
    rows = _ledger_rows(con, _ledger(table), frame)
    key = ", ".join(ledger_key(table))
    if key:
        taken = con.execute(f'SELECT {key} FROM _itap_ledger_rows JOIN "{table}" USING ({key}) LIMIT 1').fetchall()
        if taken:
            raise duckdb.ConstraintException(f"Duplicate key ({key}) = {taken[0]} violates the primary key of "
                                             f"ledger {table}")
    tree.append_ledger(table, rows)
    return frame.height


def update_row(con: duckdb.DuckDBPyConnection, schema: str, table: str, key: dict[str, object],
               values: dict[str, object]) -> None:
    """Set `values` on the ledger row whose primary key is `key` (the one update: a delivery's outcome). In the
    Parquet mode the row's new version is appended; the ledger's view shows the latest."""
    if tuple(key) != ledger_key(_ledger(table)):
        raise StorageError(f"ledger {table}: a row is named by its primary key {ledger_key(table)}, got {list(key)}")
    tree = catalog.tree_of(con)
    if tree is None:
        duckdb_file.update_row(con, schema, table, key, values)
        return
    where = " AND ".join(f'"{check_column(c)}" = ?' for c in key)
    current = frame_of(con.sql(f'SELECT * FROM "{table}" WHERE {where}', params=list(key.values())))
    if current.height != 1:
        raise StorageError(f"ledger {table}: no row with {key}")
    changed = current.with_columns(pl.lit(v).alias(check_column(c)) for c, v in values.items())
    tree.append_ledger(table, _ledger_rows(con, table, changed))
