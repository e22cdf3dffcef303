"""Switching a test to the Parquet mode, and comparing what two deployments stored.

The mode is read from the settings file ITAP_CONFIG names, for the database file ITAP_DB_PATH names (see
`itap_assets.storage`): `parquet_pipeline` writes such a config and points both variables at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pytest

from itap_assets import storage
from itap_assets.ledgers import LEDGERS
from itap_assets.views import VIEWS
from itap_assets_tests.conftest import Pipeline, write_config

# Wall-clock columns: when a model was trained or a metric computed, not what.
VOLATILE = {"trained_at", "computed_at", "created_at", "acted_at", "attempted_at", "sent_at", "run_id"}


def parquet_settings(root: str, storage_options: dict[str, str] | None = None) -> dict[str, Any]:
    return {"storage": {"mode": "parquet", "root": root, "storage_options": storage_options or {}}}


def deployment(monkeypatch: pytest.MonkeyPatch, directory: Path, overrides: dict[str, Any]) -> Pipeline:
    """A test deployment in `directory` whose config (`overrides`, e.g. with `parquet_settings`) is the one the
    storage code reads: ITAP_CONFIG and ITAP_DB_PATH point at it. The caller disposes of the instance."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory / "itap.yaml", overrides)
    monkeypatch.setenv("ITAP_CONFIG", str(config))
    monkeypatch.setenv("ITAP_DB_PATH", str(directory / "itap.duckdb"))
    return Pipeline(config, directory / "itap.duckdb", dg.DagsterInstance.ephemeral())


def stored_tables(p: Pipeline, monkeypatch: pytest.MonkeyPatch) -> dict[str, pl.DataFrame]:
    """Every table, ledger and operator view of a deployment, read by SQL as `itap.<name>`, rows in a canonical
    order and without the wall-clock columns."""
    monkeypatch.setenv("ITAP_CONFIG", str(p.config_path))
    monkeypatch.setenv("ITAP_DB_PATH", str(p.db_path))
    with storage.connect(p.db_path) as con:
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                           "'main' ORDER BY table_name").fetchall()]
        assert set(LEDGERS) | set(VIEWS) <= set(names)
        tables = {}
        for name in names:
            frame = storage.frame_of(con.sql(f'SELECT * FROM itap."{name}"'))
            frame = frame.select(sorted(c for c in frame.columns if c not in VOLATILE))
            tables[name] = frame.sort(frame.columns, nulls_last=True) if frame.height else frame
    return tables


def content_hash(frame: pl.DataFrame) -> int:
    """A hash of a table's columns, types and rows (the rows as a multiset)."""
    with duckdb.connect() as con:
        con.register("t", frame)
        rows = con.execute("SELECT sum(hash(t)) FROM t").fetchall()[0][0]  # of each row as a whole
    return hash((tuple(frame.schema.items()), frame.height, rows))
