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
import shutil
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from itap_assets.ledgers import LEDGERS, ledger_key
from itap_assets.storage.common import StorageError, table_exists
from itap_assets.storage.duckdb_file import MEMORY_LIMIT
from itap_assets.storage.parquet_tree import HIVE_KEYS, ParquetTree
from itap_assets.views import VIEWS, ledger_view, tree_table_view

TREE_VARIABLE = "itap_tree"  # set on a session: the tree its ledger appends go to
MARKER = "_itap_catalog"  # a table of the catalog file naming its tree: what tells it from a DuckDB-mode file
_verified: set[Path] = set()


def connection(tree: ParquetTree, database: str = ":memory:", fs=None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that reads the tree: object storage through an fsspec filesystem, `fs` or a snapshot
    one of its own (DuckDB's own httpfs extension is not needed)."""
    con = duckdb.connect(database, config={"memory_limit": MEMORY_LIMIT})
    if not tree.local:
        con.register_filesystem(fs or tree.snapshot_fs())
    con.execute("SET parquet_metadata_cache = true")  # a footer is read once per session, not once per query
    return con


def _columns(tree: ParquetTree, name: str) -> list[str]:
    if name in LEDGERS:
        with tree.fs.open(tree.ledger_schema_path(name).path, "rb") as fh:
            return pq.read_schema(fh).names
    return tree.columns(name)


def create_views(con: duckdb.DuckDBPyConnection, tree: ParquetTree, only: Collection[str] | None = None,
                 dependents: bool = False, schema: str = "main") -> None:
    """A view for every table and ledger of the tree and the operator views whose tables all exist, or only for
    the names in `only` (and, with `dependents`, the operator views that read one of them). Creating a view reads
    the footers of all its files (DuckDB binds it), so a catalog update makes only the views that changed."""
    present = []
    for table in tree.tables():
        keys = tree.key_columns(table)
        if keys is None:  # a first write that failed before its schema file
            continue
        present.append(table)
        if only is None or table in only:
            sql = tree_table_view(tree.sql_path(tree.glob(table)), [k for k in keys if k in HIVE_KEYS])
            con.execute(f'CREATE OR REPLACE VIEW "{schema}"."{table}" AS {sql}')
    for ledger in LEDGERS:
        if tree.has_ledger(ledger):
            present.append(ledger)
            if only is None or ledger in only:
                sql = ledger_view(tree.sql_path(tree.ledger_glob(ledger)), ledger_key(ledger))
                con.execute(f'CREATE OR REPLACE VIEW "{schema}"."{ledger}" AS {sql}')
    for name, (tables, build) in VIEWS.items():
        wanted = only is None or name in only or (dependents and set(tables) & set(only))
        if wanted and all(t in present for t in tables):
            columns = {t: _columns(tree, t) for t in tables}
            con.execute(f'CREATE OR REPLACE VIEW "{schema}"."{name}" AS {build(columns)}')


def needed(names: Collection[str]) -> set[str]:
    """`names` and the tables the operator views among them read."""
    return set(names).union(*(VIEWS[n][0] for n in names if n in VIEWS))


@contextmanager
def session(tree: ParquetTree, catalog: str, views: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory connection with the tree's views (or none yet: the caller makes those it needs) in a catalog
    named `catalog` (the catalog file's stem, so `itap.<table>` reads as in the DuckDB mode), which is also the
    default: unqualified names resolve."""
    con = connection(tree)
    try:
        con.execute(f'ATTACH \':memory:\' AS "{catalog}"')
        con.execute(f'USE "{catalog}"')
        con.execute(f"SET VARIABLE {TREE_VARIABLE} = ?", [json.dumps([tree.url, dict(tree.storage_options)])])
        if views:
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


def refresh_catalog(tree: ParquetTree, path: Path | str, changed: Collection[str]) -> None:
    """Update the catalog file, atomically (see the module docstring): a copy of it with the views of the `changed`
    tables and ledgers made again, or when it does not exist yet one built from the whole tree."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_name(path.name + ".lock")):
        _check_is_catalog(path)
        temporary = path.with_name(f".{path.stem}-{uuid.uuid4().hex}.duckdb")
        update = path.exists()
        try:
            if update:
                shutil.copyfile(path, temporary)
            with connection(tree, str(temporary)) as con:
                if update:  # also the tables an interrupted writer left out of the catalog
                    views = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
                    create_views(con, tree, {*changed, *(t for t in tree.tables() if t not in views)},
                                 dependents=True)
                else:
                    con.execute(f"CREATE TABLE {MARKER} AS SELECT ? AS root", [tree.url])
                    create_views(con, tree)
            os.replace(temporary, path)
            _verified.add(path)
        finally:
            for leftover in (temporary, temporary.with_name(temporary.name + ".wal")):
                leftover.unlink(missing_ok=True)
