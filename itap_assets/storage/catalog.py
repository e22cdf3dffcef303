"""SQL on the Parquet tree: views named as the DuckDB mode's tables (`itap.<table>`, the ledgers, `itap.v_alerts`, …),
in an in-memory session for the pipeline and in a small catalog file (ITAP_DB_PATH) for people and tools.

A view reads its files when a query runs (DuckDB binds a view's query again on every use), so new partitions and
new columns show without touching the catalog. It is rebuilt when a table or ledger appears or a table gets new
columns (an operator view such as v_data_quality is built from the columns). The catalog file is never opened
read-write at its own path: it is built under a temporary name and renamed over the old one, so a read-only
session on it (`duckdb -readonly data/itap.duckdb`) never blocks a writer; it keeps the views it opened with until
it reconnects.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from itap_assets.ledgers import LEDGERS, ledger_key
from itap_assets.storage.common import StorageError, table_exists
from itap_assets.storage.duckdb_file import MEMORY_LIMIT
from itap_assets.storage.parquet_tree import LEDGER_DIR, ParquetTree
from itap_assets.views import VIEWS, ledger_view, tree_table_view

TREE_VARIABLE = "itap_tree"  # set on a session: the tree its ledger appends go to
MARKER = "_itap_catalog"  # a table of the catalog file naming its tree: what tells it from a DuckDB-mode file
_verified: set[Path] = set()


def connection(tree: ParquetTree, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that reads the tree: object storage through the tree's fsspec filesystem (DuckDB's own
    httpfs extension is not needed)."""
    con = duckdb.connect(database, config={"memory_limit": MEMORY_LIMIT})
    if not tree.local:
        con.register_filesystem(tree.fs)
    con.execute("SET parquet_metadata_cache = true")  # a footer is read once per session, not once per query
    return con


def create_views(con: duckdb.DuckDBPyConnection, tree: ParquetTree, schema: str = "main") -> None:
    """A view for every table and ledger of the tree, then the operator views whose tables exist."""
    made = []
    for table in tree.tables():
        keys = tree.key_columns(table)
        if keys is None:  # a first write that failed before its schema file
            continue
        sql = tree_table_view(tree.sql_path(tree.glob(table)), [k for k in keys if k in ("day", "device_id")])
        con.execute(f'CREATE OR REPLACE VIEW "{schema}"."{table}" AS {sql}')
        made.append(table)
    ledgers_dir = (tree.root / LEDGER_DIR).path
    listed = {Path(p).name for p in tree.fs.ls(ledgers_dir, detail=False)} if tree.fs.exists(ledgers_dir) else set()
    for ledger in LEDGERS:
        if ledger in listed and tree.fs.exists(tree.ledger_schema_path(ledger).path):
            sql = ledger_view(tree.sql_path(tree.ledger_glob(ledger)), ledger_key(ledger))
            con.execute(f'CREATE OR REPLACE VIEW "{schema}"."{ledger}" AS {sql}')
            made.append(ledger)
    for name, (tables, build) in VIEWS.items():
        if all(t in made for t in tables):
            columns = {t: [row[0] for row in con.execute(f'DESCRIBE "{schema}"."{t}"').fetchall()] for t in tables}
            con.execute(f'CREATE OR REPLACE VIEW "{schema}"."{name}" AS {build(columns)}')


@contextmanager
def session(tree: ParquetTree, catalog: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory connection with the tree's views in a catalog named `catalog` (the catalog file's stem, so
    `itap.<table>` reads as in the DuckDB mode), which is also the default: unqualified names resolve."""
    con = connection(tree)
    try:
        con.execute(f'ATTACH \':memory:\' AS "{catalog}"')
        con.execute(f'USE "{catalog}"')
        con.execute(f"SET VARIABLE {TREE_VARIABLE} = ?", [json.dumps([tree.url, dict(tree.storage_options)])])
        create_views(con, tree)
        yield con
    finally:
        con.close()


def tree_of(con: duckdb.DuckDBPyConnection) -> ParquetTree | None:
    """The tree of a session (None for a connection to a DuckDB-mode file)."""
    value = con.execute(f"SELECT getvariable('{TREE_VARIABLE}')").fetchall()[0][0]
    if value is None:
        return None
    url, options = json.loads(value)
    return ParquetTree(url, tuple(sorted(options.items())))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Writers rebuilding the catalog take turns (milliseconds); readers never take this lock."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check_is_catalog(path: Path) -> None:
    """Refuse to replace a DuckDB-mode database (its tables, and the operators' ledgers, would be lost)."""
    if path in _verified or not path.exists():
        return
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            ours = table_exists(con, "main", MARKER)
    except duckdb.Error:
        ours = False
    if not ours:
        raise StorageError(f"storage.mode: parquet: {path} (ITAP_DB_PATH) is not a Parquet-mode catalog (a DuckDB-mode "
                           f"database?): move it away or set ITAP_DB_PATH to another file")
    _verified.add(path)


def refresh_catalog(tree: ParquetTree, path: Path | str) -> None:
    """Rebuild the catalog file from the tree as it is now, atomically (see the module docstring)."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_name(path.name + ".lock")):
        _check_is_catalog(path)
        temporary = path.with_name(f".{path.stem}-{uuid.uuid4().hex}.duckdb")
        try:
            with connection(tree, str(temporary)) as con:
                con.execute(f"CREATE TABLE {MARKER} AS SELECT ? AS root", [tree.url])
                create_views(con, tree)
            os.replace(temporary, path)
            _verified.add(path)
        finally:
            for leftover in (temporary, temporary.with_name(temporary.name + ".wal")):
                leftover.unlink(missing_ok=True)
