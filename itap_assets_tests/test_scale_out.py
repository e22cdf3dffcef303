"""Issue 21 end to end: the whole graph on a small demo fleet in the Parquet mode, with the PostgreSQL instance, on
the multiprocess executor with 2 processes and on a Dask LocalCluster with 2 workers, on local disk and on the
local S3 server, blocks of devices running side by side (itap_assets.parallel_runs) — every table identical to
the DuckDB mode's, while a read-only SQL session on the catalog stays open and blocks nothing.

Each deployment runs in a process of its own (`python -m itap_assets.parallel_runs`), as `make demo` would: the
Definitions read their executor and storage from the settings once per process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import fsspec
import polars as pl
import pytest
from dask.distributed import LocalCluster

from itap_assets.settings import PROJECT_ROOT
from itap_assets_tests.conftest import Pipeline, run_graph, write_config
from itap_assets_tests.postgres_server import postgres_server  # noqa: F401 - the fixture
from itap_assets_tests.s3_server import s3_server  # noqa: F401 - the fixture
from itap_assets_tests.storage_modes import content_hash, deployment, parquet_settings, stored_tables

DEVICES = ["DEV-0001", "DEV-0002", "DEV-0003", "DEV-0004"]
DAYS = ["2026-01-01", "2026-01-02"]
FLEET = {"simulation": {"devices": 4, "days": 2, "sample_interval_s": 60, "fault_rate": 3.0, "seed": 3}}
RUN_TIMEOUT_S = 600
# Runs per deployment: telemetry, training and scoring once per block of 2 devices, notifications, fleet and
# evaluation once.
RUNS = 2 * 3 + 3


@pytest.fixture(scope="module")
def duckdb_tables(tmp_path_factory) -> dict[str, pl.DataFrame]:
    """The reference: the DuckDB mode, in process, one run per job."""
    with pytest.MonkeyPatch.context() as mp:
        p = deployment(mp, tmp_path_factory.mktemp("duckdb"), FLEET)
        try:
            assert all(r.success for r in run_graph(p, DEVICES, DAYS))
            return stored_tables(p, mp)
        finally:
            p.instance.dispose()


class CatalogReader(threading.Thread):
    """A read-only session on the catalog file (as `duckdb -readonly data/itap.duckdb`), opened as soon as the
    file exists and left open while the deployment runs, querying the whole time."""

    def __init__(self, catalog: Path, root: str, storage_options: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.catalog, self.root, self.storage_options = catalog, root, storage_options
        self.stop, self.opened = threading.Event(), threading.Event()
        self.con: duckdb.DuckDBPyConnection | None = None
        self.queries, self.errors = 0, []

    def run(self) -> None:
        while not self.catalog.exists():
            if self.stop.wait(0.05):
                return
        self.con = duckdb.connect(str(self.catalog), read_only=True)
        if self.root.startswith("s3://"):
            self.con.register_filesystem(fsspec.filesystem("s3", skip_instance_cache=True, **self.storage_options))
        self.opened.set()
        while not self.stop.wait(0.5):
            try:
                self.con.execute("SELECT count(*) FROM itap.raw_telemetry").fetchall()
                self.queries += 1
            except duckdb.Error as exc:
                self.errors.append(str(exc))


def run_deployment(directory: Path, overrides: dict, env: dict[str, str]) -> tuple[Pipeline, CatalogReader]:
    """The deployment's whole graph in a child process with the PostgreSQL instance; returns it with the reader,
    whose session is still open."""
    directory.mkdir(parents=True)
    home = directory / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "configs" / "dagster_postgres.yaml", home / "dagster.yaml")
    config = write_config(directory / "itap.yaml", {**FLEET, **overrides})
    catalog = directory / "itap.duckdb"
    storage = overrides["storage"]
    reader = CatalogReader(catalog, storage["root"], storage["storage_options"])
    reader.start()
    child_env = {**os.environ, **env, "DAGSTER_HOME": str(home), "ITAP_CONFIG": str(config),
                 "ITAP_DB_PATH": str(catalog)}
    try:
        done = subprocess.run([sys.executable, "-m", "itap_assets.parallel_runs"], cwd=PROJECT_ROOT,
                              env=child_env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    finally:
        reader.stop.set()
        reader.join()
    assert done.returncode == 0, done.stderr[-4000:]
    return Pipeline(config, catalog, None), reader


def assert_same_tables(reference: dict[str, pl.DataFrame], tables: dict[str, pl.DataFrame]) -> None:
    assert sorted(tables) == sorted(reference)
    different = [name for name, frame in reference.items() if content_hash(tables[name]) != content_hash(frame)]
    assert not different, f"tables that differ from the DuckDB mode's: {different}"
    assert reference["scores"].height and reference["v_alerts"].height and reference["model"].height


def assert_blocks_ran_side_by_side(home: Path) -> None:
    """Every run succeeded in the PostgreSQL instance, and the two blocks of each device job overlapped in time."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records()
        assert len(records) == RUNS and all(r.dagster_run.is_success for r in records)
        for job in ("telemetry_job", "scoring_job"):
            a, b = [(r.start_time, r.end_time) for r in records if r.dagster_run.job_name == job]
            assert max(a[0], b[0]) < min(a[1], b[1]), f"the two blocks of {job} ran one after the other"


def check(p: Pipeline, reader: CatalogReader, duckdb_tables, env: dict[str, str], monkeypatch) -> None:
    assert reader.opened.is_set() and reader.queries > 0 and not reader.errors, reader.errors[:3]
    # The session opened at the first write is still open and reads everything written since through its views.
    assert reader.con.execute("SELECT count(*) FROM itap.raw_telemetry").fetchall() == [
        (duckdb_tables["raw_telemetry"].height,)]
    reader.con.close()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert_blocks_ran_side_by_side(p.db_path.parent / "dagster_home")
    assert_same_tables(duckdb_tables, stored_tables(p, monkeypatch))


EXECUTORS = {
    "multiprocess": {"executor": "multiprocess", "processes": 2},
    "dask": {"executor": "dask", "processes": 2},  # + dask_address: the LocalCluster of 2 workers below
}
# Each executor and each store once in the suite (a deployment costs 45-110 s on 2 busy cores, most of it
# process starts and, on the S3 server, requests); ITAP_SCALE_OUT=all adds the other two pairs.
PAIRS = [("multiprocess", "local"), ("dask", "s3")]
OTHER_PAIRS = [("multiprocess", "s3"), ("dask", "local")]
ALL = os.environ.get("ITAP_SCALE_OUT") == "all"


@pytest.mark.parametrize("executor, where", PAIRS + (OTHER_PAIRS if ALL else []))
def test_parquet_mode_on_postgres_with_parallel_runs_gives_the_duckdb_modes_tables(
        executor, where, duckdb_tables, postgres_server, s3_server, tmp_path, monkeypatch):  # noqa: F811
    name = f"{executor}_{where}"
    if where == "local":
        storage = parquet_settings(str(tmp_path / name / "parquet"))
    else:
        storage = parquet_settings(s3_server.bucket(name.replace("_", "-")) + "/itap", s3_server.storage_options)
    env = postgres_server.database(f"itap_{name}")
    execution = dict(EXECUTORS[executor])
    directory = tmp_path / name
    cluster = None
    if executor == "dask":
        # The workers execute the steps: they read the deployment's settings, as a cluster's workers would.
        worker_env = {**env, "ITAP_CONFIG": str(directory / "itap.yaml"), "ITAP_DB_PATH": str(directory / "itap.duckdb"),
                      "DAGSTER_HOME": str(directory / "dagster_home")}
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                               env=worker_env)
        execution["dask_address"] = cluster.scheduler_address
    try:
        started = time.monotonic()
        p, reader = run_deployment(directory, {**storage, "execution": execution}, env)
        print(f"{name}: {time.monotonic() - started:.1f} s")
    finally:
        if cluster is not None:
            cluster.close()
    check(p, reader, duckdb_tables, env, monkeypatch)
