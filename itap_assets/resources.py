"""Resources named once: the IO manager, the SQL reader, the settings and rules files, and the writers' pools."""


import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date

import dagster as dg
import duckdb
import polars as pl
from pydantic import model_validator

from itap_assets import storage
from itap_assets.assets.metadata import add_partition_metadata
from itap_assets.partitions import DAY, DEVICE, valid_keys
from itap_assets.core.alerting import AlertRulesConfig, load_alert_rules
from itap_assets.settings import FAMILIES, PROJECT_ROOT, Settings, config_path, db_path, load_settings

EVENT_FAMILIES = ("State", "DataQuality")


def alert_rules_path() -> str:
    return os.environ.get("ITAP_ALERT_RULES", str(PROJECT_ROOT / "configs" / "alert_rules.yaml"))

DUCKDB_POOL = "itap_duckdb"
NOTIFICATIONS_POOL = "itap_notifications"


def writer_pool(settings: Settings | None = None) -> str | None:
    """The pool of the steps that write tables, decided when the definitions load: the DuckDB file's single writer
    slot, or none in the Parquet mode (each partition is its own file: writers never contend)."""
    return DUCKDB_POOL if (settings or load_settings()).storage.mode == "duckdb" else None


def delivery_pool(settings: Settings | None = None) -> str:
    """Two deliveries never overlap (each would send the other's pending notices): they share the writers' slot in
    the DuckDB mode, and have a slot of their own in the Parquet mode."""
    return DUCKDB_POOL if (settings or load_settings()).storage.mode == "duckdb" else NOTIFICATIONS_POOL

# Tables live in the main schema of data/itap.duckdb, so `itap.<table>` resolves through the catalog name
# (a schema also named itap would make every `itap.<table>` ambiguous in DuckDB).
DB_SCHEMA = "main"


def partition_keys_frame(partitions_def: dg.PartitionsDefinition | None, keys: list[str]) -> pl.DataFrame | None:
    """Map Dagster partition keys to the (day, device_id) rows they name; None for an unpartitioned asset."""
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        dims = [d.name for d in partitions_def.partitions_defs]
        parts = []
        for key in keys:
            values = key.split("|")
            if len(values) != len(dims):
                raise storage.StorageError(f"partition key {key!r} does not have the form day|device")
            parts.append(dict(zip(dims, values)))
        return storage.partition_frame(
            [date.fromisoformat(p[DAY]) for p in parts], [p[DEVICE] for p in parts]
        )
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return storage.partition_frame([date.fromisoformat(k) for k in keys], None)
    return storage.partition_frame(None, list(keys))


class DuckDBPolarsIOManager(dg.ConfigurableIOManager):
    """Polars frames in DuckDB (or, with storage.mode: parquet, Parquet files under storage.root with `database`
    their SQL catalog): table = asset name, one run may write any set of day × device partitions.

    Replaces dagster-duckdb-polars' handler, which on duckdb 2.0 fails to load inputs (relation.arrow() is gone),
    needs the instance for dynamic partitions outside a partition_loading_context, and supports a single key range
    per run. Writes replace exactly the partitions of the run, atomically; a locked file is retried with backoff.
    """

    database: str
    db_schema: str = DB_SCHEMA

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | storage.FrameChunks | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, (pl.DataFrame, storage.FrameChunks)):
            raise TypeError(f"asset {context.asset_key.to_user_string()} must return a polars DataFrame or "
                            f"FrameChunks, got {type(obj)}")
        table = context.asset_key.path[-1]
        keys = None
        if context.has_asset_partitions:
            keys = self._keys(context)
        counts: list[pl.DataFrame] = []  # rows per (day, device_id) written, for each partition's own metadata
        if isinstance(obj, storage.FrameChunks):
            obj = storage.FrameChunks(_counted(obj, counts), obj.metadata)
        elif keys is not None and {"day", "device_id"} <= set(obj.columns):
            counts.append(obj.group_by("day", "device_id").len())
        rows = storage.replace_partitions(self.database, self.db_schema, table, obj, keys)
        if keys is not None and counts and {"day", "device_id"} <= set(keys.columns):
            add_partition_metadata(context.step_context, context.asset_key, pl.concat(counts), keys,
                                   {"dagster/row_count": pl.col("len").sum()})
        context.add_output_metadata(
            {
                "dagster/row_count": rows,
                "table": f"{self.db_schema}.{table}",
                "partitions_written": keys.height if keys is not None else 0,
                **(obj.metadata if isinstance(obj, storage.FrameChunks) else {}),
            }
        )

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        table = context.upstream_output.asset_key.path[-1] if context.upstream_output else context.asset_key.path[-1]
        keys = None
        if context.has_asset_partitions:
            keys = self._keys(context)
        return storage.read_partitions(self.database, self.db_schema, table, keys)

    @staticmethod
    def _keys(context: dg.InputContext | dg.OutputContext) -> pl.DataFrame | None:
        """The key frame of the partitions read or written; a device key that is not a valid id (added by hand to
        the instance) is reported and left out, so it does not fail the run's other partitions."""
        partitions_def = context.asset_partitions_def
        return partition_keys_frame(partitions_def, valid_keys(partitions_def, context.asset_partition_keys,
                                                               context.log.warning))


def _counted(chunks: storage.FrameChunks, counts: list[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The chunks as they are written, each one's rows per (day, device_id) appended to `counts`."""
    for chunk in chunks:
        if {"day", "device_id"} <= set(chunk.columns):
            counts.append(chunk.group_by("day", "device_id").len())
        yield chunk


class Warehouse(dg.ConfigurableResource):
    """Direct SQL reads for steps whose inputs are not a partition mapping: a model reads only its training window,
    evaluation reads whole tables. The DuckDB file, or in the Parquet mode an in-memory DuckDB session whose views
    read the Parquet tree under the same names."""

    database: str
    db_schema: str = DB_SCHEMA

    def query(self, sql: str, params: list | None = None, frames: dict[str, pl.DataFrame] | None = None
              ) -> pl.DataFrame:
        """Run a SELECT; `frames` are registered as views under their names (e.g. keys to join with)."""
        with self.session() as session:
            return session.query(sql, params, frames)

    def has_table(self, table: str) -> bool:
        return storage.has_table(self.database, self.db_schema, storage.check_identifier(table))

    @contextmanager
    def session(self) -> Iterator["WarehouseSession"]:
        """One connection for many queries: opening the file costs tens of milliseconds, which a loop over a
        hundred devices would pay a hundred times."""
        with storage.sql_session(self.database) as (con, prepare):
            session = WarehouseSession(con, prepare)
            try:
                yield session
            finally:
                for cursor in session.cursors:  # each keeps the database (and its filesystem) open otherwise
                    cursor.close()


@dataclass
class WarehouseSession:
    """Queries on one open connection (see `Warehouse.session`); `prepare(sql)` runs before each (storage.sql_session:
    the Parquet mode makes the views a query names), one thread at a time."""

    con: duckdb.DuckDBPyConnection
    prepare: Callable[[str], None] = lambda sql: None
    lock: threading.Lock = field(default_factory=threading.Lock)
    cursors: list[duckdb.DuckDBPyConnection] = field(default_factory=list)  # made by `cursor`, closed with the session

    def cursor(self) -> "WarehouseSession":
        """A session on the same database for use in another thread (a DuckDB connection is not thread-safe), with
        the same default catalog (a Parquet-mode session's views live in an attached one)."""
        catalog = self.con.execute("SELECT current_database()").fetchall()[0][0]
        cursor = self.con.cursor()
        cursor.execute(f'USE "{catalog}"')
        self.cursors.append(cursor)
        return WarehouseSession(cursor, self.prepare, self.lock, self.cursors)

    def query(self, sql: str, params: list | None = None, frames: dict[str, pl.DataFrame] | None = None
              ) -> pl.DataFrame:
        with self.lock:
            self.prepare(sql)
        for name, frame in (frames or {}).items():
            self.con.register(storage.check_identifier(name), frame)
        return storage.frame_of(self.con.sql(sql, params=params or None))


class ItapConfig(dg.ConfigurableResource):
    """The validated `configs/itap.yaml` (path from ITAP_CONFIG)."""

    path: str

    @property
    def settings(self) -> Settings:
        return load_settings(self.path)


def known_families(settings: Settings) -> list[str]:
    """Families a rule may name: the standard ones (a rule on a family without sensors never matches), those the
    config's sensors add, and the event families of the feature registry."""
    return sorted(set(FAMILIES) | set(settings.sensor_families.values()) | set(EVENT_FAMILIES))


class AlertRules(dg.ConfigurableResource):
    """`configs/alert_rules.yaml` (path from ITAP_ALERT_RULES), validated when the Definitions load.

    The check runs in a pydantic validator, so `dagster definitions validate` and the UI reject a bad rule file
    with a message naming file, rule and field, instead of failing later inside a run.
    """

    path: str
    config_path: str

    @model_validator(mode="after")
    def _validate_file(self) -> "AlertRules":
        self.rules  # noqa: B018 - loading is the validation
        return self

    @property
    def rules(self) -> AlertRulesConfig:
        return load_alert_rules(self.path, known_families(load_settings(self.config_path)))


def default_resources() -> dict[str, object]:
    """Resources for the project's Definitions; paths come from the environment, resolved here, once."""
    return {
        "io_manager": DuckDBPolarsIOManager(database=str(db_path())),
        "warehouse": Warehouse(database=str(db_path())),
        "itap_config": ItapConfig(path=str(config_path())),
        "alert_rules": AlertRules(path=alert_rules_path(), config_path=str(config_path())),
    }
