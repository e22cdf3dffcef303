"""The Parquet mode's files: one Parquet file per asset partition under a root on local disk or object storage.

`<root>/<table>/day=YYYY-MM-DD/device_id=<id>/part.parquet` (device-only tables `device_id=<id>/part.parquet`,
day-only `day=…/part.parquet`, unpartitioned `part.parquet`, any other key column `<column>-<hash>/`). Paths go
through universal-pathlib, so local disk and S3-compatible stores share this code. A file is written under a
temporary name and renamed (local disk), or in one PUT (object storage, where an object appears whole or not at
all), so a reader never sees half a file; a partition that now has no rows loses its file.

Each partitioned table also holds a schema file: a zero-row partition at the same directory depth
(`day=0001-01-01/device_id=_schema/`, no real partition can have that key). A table whose partitions are all empty
keeps its columns, and a glob over the table always matches a file (DuckDB fails on a glob that matches nothing).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path

import duckdb
import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from itap_assets.core.frames import sorted_by
from itap_assets.ledgers import LEDGERS
from itap_assets.storage.common import (FrameChunks, StorageError, check_device_id, check_identifier,
                                        check_nested_types, checked_keys, frame_of)

PART = "part.parquet"
LEDGER_DIR = "_ledgers"
SCHEMA_DAY = date(1, 1, 1)
SCHEMA_VALUE = "_schema"
HIVE_KEYS = ("day", "device_id")  # directory names `key=value`; DuckDB reads them as columns
WRITERS = 8  # files written at once: object storage is latency-bound, local disk is not hurt
_sequence = itertools.count()


def _hashed(value: object) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()[:24]


SCHEMA_MARKERS = (f"day={SCHEMA_DAY.isoformat()}", f"device_id={SCHEMA_VALUE}")  # and `<column>-<_hashed(_schema)>`


def segment(column: str, value: object) -> str:
    """The directory of one key value. Device ids match ID_PATTERN, so they are safe path segments; other key
    values (file names) are hashed."""
    if column == "day":
        return f"day={value.isoformat()}"
    if column == "device_id":
        return f"device_id={value if value == SCHEMA_VALUE else check_device_id(value)}"
    return f"{column}-{_hashed(value)}"


def _schema_value(column: str) -> object:
    return SCHEMA_DAY if column == "day" else SCHEMA_VALUE


@dataclass(frozen=True)
class ParquetTree:
    """The tree under `url` (an absolute local path or an fsspec URL such as s3://bucket/itap)."""

    url: str
    storage_options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def at(cls, root: str, storage_options: dict[str, str], base: Path) -> ParquetTree:
        """The tree of `storage.root` (a relative local path is taken from `base`)."""
        if "://" not in root:
            root = str((base / root).resolve())
        return cls(root.rstrip("/"), tuple(sorted(storage_options.items())))

    @cached_property
    def root(self) -> UPath:
        options = dict(self.storage_options)
        if "://" in self.url and not self.url.startswith("file://"):
            # Another process's files must show at once: fsspec would otherwise keep a listing forever.
            options.setdefault("use_listings_cache", False)
        try:
            root = UPath(self.url, **options)
            root.fs  # noqa: B018 - a filesystem without its fsspec package fails here, naming the setting
        except (ImportError, ValueError, TypeError) as exc:
            raise StorageError(f"storage.root: cannot use {self.url!r}: {exc}") from exc
        return root

    @property
    def fs(self):
        return self.root.fs

    def snapshot_fs(self):
        """A filesystem of its own for one SQL session or catalog build, that keeps the listings it made: DuckDB
        asks for a file's size and age several times per read, a request each on object storage otherwise. Files
        written by others after the session listed them are not seen by that session."""
        if self.local:
            return self.fs
        options = {**dict(self.storage_options), "use_listings_cache": True, "skip_instance_cache": True}
        return fsspec.filesystem(self.root.protocol, **options)

    @property
    def local(self) -> bool:
        return self.root.protocol in ("", "file", "local")

    def sql_path(self, path: UPath) -> str:
        """The path as DuckDB reads it: a local path, or a URL read through the registered fsspec filesystem."""
        return path.path if self.local else str(path)

    # --- layout -------------------------------------------------------------------------------------------------

    def table_dir(self, table: str) -> UPath:
        return self.root / check_identifier(table)

    def part_path(self, table: str, key: dict[str, object]) -> UPath:
        return self.table_dir(table).joinpath(*(segment(c, v) for c, v in key.items()), PART)

    def schema_path(self, table: str, key_columns: Sequence[str]) -> UPath:
        return self.part_path(table, {c: _schema_value(c) for c in key_columns})

    def tables(self) -> list[str]:
        """The tables that have files, in name order."""
        try:
            names = [Path(p).name for p in self.fs.ls(self.root.path, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not n.startswith(("_", ".")))

    @cached_property
    def _layouts(self) -> dict[str, tuple[str, ...]]:
        return {}

    def key_columns(self, table: str) -> tuple[str, ...] | None:
        """The table's partition columns, read off its schema file's path (once: a table keeps its partitioning);
        None when the table has no files."""
        if table not in self._layouts:
            found = self._find_key_columns(table)
            if found is None:
                return None
            self._layouts[table] = found
        return self._layouts[table]

    def _find_key_columns(self, table: str) -> tuple[str, ...] | None:
        level, columns = self.table_dir(table), []
        while True:
            try:
                entries = {Path(p).name for p in self.fs.ls(level.path, detail=False)}
            except FileNotFoundError:
                return None
            if PART in entries:
                return tuple(columns)
            marker = next((e for e in entries if e in SCHEMA_MARKERS or e.endswith(f"-{_hashed(SCHEMA_VALUE)}")),
                          None)
            if marker is None:
                return None
            columns.append(marker.split("=")[0] if "=" in marker else marker.rsplit("-", 1)[0])
            level = level / marker

    def columns(self, table: str) -> list[str]:
        """The table's columns, as its schema file holds them (the union of all written)."""
        with self.fs.open(self.schema_path(table, self.key_columns(table)).path, "rb") as fh:
            return pq.read_schema(fh).names

    def glob(self, table: str) -> UPath:
        return self.table_dir(table) / "**" / PART

    def files(self, table: str, fs=None) -> list[str]:
        """Every partition file of the table (the schema file included), as fsspec paths, listed by `fs` (default:
        the tree's)."""
        return sorted((fs or self.fs).glob(self.glob(table).path))

    # --- files --------------------------------------------------------------------------------------------------

    def write_file(self, path: UPath, table: pa.Table | pl.DataFrame) -> None:
        """Write one file so that a reader sees the old file or the new one, never a part: on local disk under a
        temporary name, then renamed; on object storage in one upload of the finished bytes (an interrupted
        stream would otherwise still be completed as an object)."""
        if not self.local:
            buffer = io.BytesIO()
            _write(table, buffer)
            self.fs.pipe_file(path.path, buffer.getvalue())
            return
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        self.fs.makedirs(path.parent.path, exist_ok=True)
        try:
            with self.fs.open(temporary.path, "wb") as fh:
                _write(table, fh)
                fh.flush()
                os.fsync(fh.fileno())  # on disk before the rename makes it the partition's file
            self.fs.mv(temporary.path, path.path)
        finally:
            if self.fs.exists(temporary.path):
                self.fs.rm_file(temporary.path)

    # --- tables -------------------------------------------------------------------------------------------------

    def replace_partitions(self, table: str, obj: pl.DataFrame | FrameChunks, keys: pl.DataFrame | None
                           ) -> tuple[int, bool]:
        """Replace the files of the given partitions (the table's one file when keys is None) with `obj`, a frame or
        the chunks of one; a partition of `keys` without rows loses its file. Returns the rows written and whether
        the table is new or got new columns (views built on its columns must then be rebuilt)."""
        columns = tuple(keys.columns) if keys is not None else ()
        stored = self.key_columns(table)
        if stored is not None and stored != columns:
            raise StorageError(f"table {table} is stored partitioned by {list(stored) or 'nothing'} but written "
                               f"partitioned by {list(columns) or 'nothing'}: drop {self.table_dir(table)} and "
                               f"materialize it again")
        if keys is None:
            if not isinstance(obj, pl.DataFrame):
                raise StorageError(f"table {table}: only a partitioned output can be written in chunks")
            checked_keys(obj, None, table)
            self.write_file(self.part_path(table, {}), obj)
            return obj.height, stored is None
        before = set(self.files(table)) if stored is not None else set()
        changed, rows, written = stored is None, 0, keys.clear()
        with ThreadPoolExecutor(WRITERS) as pool:
            for chunk in [obj] if isinstance(obj, pl.DataFrame) else obj:
                own = checked_keys(chunk, keys, table)
                if own.join(written, on=keys.columns, how="semi").height:
                    raise StorageError(f"table {table}: a partition spans two chunks (chunks must hold whole "
                                       f"partitions)")
                changed |= self._merge_schema(table, columns, chunk)
                parts = chunk.partition_by(list(columns), as_dict=True, maintain_order=True) if chunk.height else {}
                list(pool.map(lambda item: self.write_file(self.part_path(table, dict(zip(columns, item[0]))),
                                                           item[1]), parts.items()))
                rows += chunk.height
                written = pl.concat([written, own])
        emptied = keys.join(written, on=list(columns), how="anti")
        for key in emptied.iter_rows(named=True):
            path = self.part_path(table, key).path
            if path in before:
                self.fs.rm_file(path)  # its empty directories stay: globs only match files
        return rows, changed

    def _merge_schema(self, table: str, columns: Sequence[str], frame: pl.DataFrame) -> bool:
        """Keep the table's schema file the union of the columns written (as the DuckDB mode adds a column); True
        when it changed. A struct or list column meeting another type is refused (check_nested_types)."""
        path = self.schema_path(table, columns)
        try:
            with self.fs.open(path.path, "rb") as fh:
                old = pl.read_parquet(fh)
        except FileNotFoundError:
            old = None
        new = frame.clear()
        if old is not None:
            check_nested_types(old.schema, new.schema, table, nested=lambda t: t.is_nested())
            if set(new.columns) <= set(old.columns):
                return False
            new = pl.concat([old, new], how="diagonal_relaxed")
        self.write_file(path, new)
        return True

    def read_partitions(self, con: duckdb.DuckDBPyConnection, fs, table: str, keys: pl.DataFrame | None,
                        where: str) -> pl.DataFrame:
        """Rows of the given partitions (all rows when keys is None), ordered by partition and time, read through
        `con`, whose filesystem `fs` lists them, so that types come out as the DuckDB mode's (a file without a
        column reads it as NULL)."""
        columns = self.key_columns(table)
        if columns is None:
            raise StorageError(f"table {table} does not exist in {where}: materialize asset '{table}' first")
        files = self.files(table, fs)
        schema = self.schema_path(table, columns).path
        if keys is not None:
            wanted = {self.part_path(table, key).path for key in keys.select(columns).iter_rows(named=True)}
            files = [f for f in files if f in wanted]
        # In the order the rows are wanted (device, day), so that the sort at the end finds them sorted.
        files = [schema, *sorted((f for f in files if f != schema), key=_device_then_day)]
        urls = [f if self.local else self.fs.unstrip_protocol(f) for f in files]
        rows = frame_of(con.sql("SELECT * FROM read_parquet(?, union_by_name = true, hive_partitioning = false)",
                                params=[urls]))
        return sorted_by(rows, [c for c in ("device_id", "day", "ts") if c in rows.columns])

    # --- ledgers ------------------------------------------------------------------------------------------------

    def ledger_dir(self, table: str) -> UPath:
        return self.root / LEDGER_DIR / check_identifier(table)

    def ledger_schema_path(self, table: str) -> UPath:
        return self.ledger_dir(table) / f"{SCHEMA_VALUE}.parquet"

    def ledger_glob(self, table: str) -> UPath:
        return self.ledger_dir(table) / "*.parquet"

    def ensure_ledgers(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Give each ledger its schema file (zero rows, the DDL's types) when it has none; True if one was made."""
        made = False
        for table in LEDGERS:
            path = self.ledger_schema_path(table)
            if table in self._ledgers_seen:
                continue
            if not self.fs.exists(path.path):
                self.write_file(path, con.sql(f"SELECT * FROM ({_ddl_select(con, table)}) LIMIT 0").to_arrow_table())
                made = True
            self._ledgers_seen.add(table)
        return made

    def has_ledger(self, table: str) -> bool:
        """Whether the ledger has its schema file (views can read it)."""
        if table not in self._ledgers_seen and self.fs.exists(self.ledger_schema_path(table).path):
            self._ledgers_seen.add(table)
        return table in self._ledgers_seen

    @cached_property
    def _ledgers_seen(self) -> set[str]:
        """Ledgers known to have their schema file (it is never removed)."""
        return set()

    def append_ledger(self, table: str, rows: pa.Table) -> None:
        """One new file per append, named to sort in the order of writing (views.ledger_view)."""
        name = f"{time.time_ns():020d}-{next(_sequence):06d}-{uuid.uuid4().hex[:12]}.parquet"
        self.write_file(self.ledger_dir(table) / name, rows)


def _ddl_select(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """A SELECT of no rows with the columns and types of the ledger's DDL."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _itap_ddl_{table} ({LEDGERS[table]})")
    return f"SELECT * FROM _itap_ddl_{table}"


def _write(table: pa.Table | pl.DataFrame, sink) -> None:
    if isinstance(table, pl.DataFrame):
        table.write_parquet(sink)
    else:
        pq.write_table(table, sink)


def _device_then_day(path: str) -> tuple[str, str]:
    parts = path.split("/")
    return (next((p for p in parts if p.startswith("device_id=")), ""),
            next((p for p in parts if p.startswith("day=")), ""))
