"""Crash safety and concurrency of the DuckDB store, with real processes and kill -9."""

import os
import signal
import subprocess
import sys
import time
from datetime import date

import polars as pl
import pytest

from itap_assets import storage
from itap_assets.core.simulator import simulate_fleet
from itap_assets.resources import DB_SCHEMA
from itap_assets.settings import PROJECT_ROOT, SimulationSettings
from itap_assets_tests.conftest import write_config

DAY = date(2026, 1, 1)


def runner(config, db, first, last, *assets, loop=False) -> subprocess.Popen:
    args = [sys.executable, "-m", "itap_assets_tests.reliability.runner", str(config), str(db), first, last, *assets]
    return subprocess.Popen(args + (["--loop"] if loop else []), cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def content_hash(frame: pl.DataFrame) -> int:
    return int(frame.sort("device_id", "ts").hash_rows().sum())


def test_kill_9_mid_write_leaves_old_or_new_rows_never_half(tmp_path):
    sim = {"devices": 1, "days": 1, "sample_interval_s": 1, "healthy_days": 0, "fault_rate": 3.0}
    config = write_config(tmp_path / "itap.yaml", {"simulation": {**sim, "seed": 0}})
    db = tmp_path / "itap.duckdb"
    expected = {content_hash(simulate_fleet(SimulationSettings(**sim, seed=seed))) for seed in (0, 1)}
    assert len(expected) == 2
    key = f"{DAY}|DEV-0001"
    kills = 0
    for delay in (4.0, 5.3, 6.1, 7.7):
        proc = runner(config, db, key, key, "raw_telemetry", loop=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        if not db.exists():
            continue
        rows = storage.read_partitions(db, DB_SCHEMA, "raw_telemetry", None) if _has_table(db) else None
        if rows is not None:
            assert rows.height == 86_400
            assert content_hash(rows) in expected
    assert kills == 4
    # The next run succeeds and leaves the rows of its own seed.
    write_config(config, {"simulation": {**sim, "seed": 1}})
    done = runner(config, db, key, key, "raw_telemetry")
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-2000:]
    seed_1 = content_hash(simulate_fleet(SimulationSettings(**sim, seed=1)))
    assert content_hash(storage.read_partitions(db, DB_SCHEMA, "raw_telemetry", None)) == seed_1


def _has_table(db) -> bool:
    with storage.connect(db) as con:
        return storage.table_exists(con, DB_SCHEMA, "raw_telemetry")


def test_two_processes_write_different_partitions_of_the_same_assets_at_once(tmp_path):
    sim = {"devices": 2, "days": 2, "sample_interval_s": 10}
    config = write_config(tmp_path / "itap.yaml", {"simulation": sim})
    db = tmp_path / "itap.duckdb"
    assets = ("raw_telemetry", "validated", "quarantine", "features")
    first = runner(config, db, "2026-01-01|DEV-0001", "2026-01-02|DEV-0001", *assets)
    second = runner(config, db, "2026-01-01|DEV-0002", "2026-01-02|DEV-0002", *assets)
    for proc in (first, second):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "ok" in out, err[-2000:]
    raw = storage.read_partitions(db, DB_SCHEMA, "raw_telemetry", None)
    assert content_hash(raw) == content_hash(simulate_fleet(SimulationSettings(**sim)))
    features = storage.read_partitions(db, DB_SCHEMA, "features", None)
    assert features.group_by("device_id").len().sort("device_id")["len"].to_list() == [17_280, 17_280]


def test_a_read_only_sql_session_during_a_run_does_not_break_it(tmp_path):
    config = write_config(tmp_path / "itap.yaml", {"simulation": {"devices": 1, "days": 1, "sample_interval_s": 10}})
    db = tmp_path / "itap.duckdb"
    key = f"{DAY}|DEV-0001"
    setup = runner(config, db, key, key, "raw_telemetry")
    assert setup.wait(timeout=300) == 0
    reader = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db)!r}, read_only=True); "
         "print(c.execute('SELECT count(*) FROM raw_telemetry').fetchall()[0][0], flush=True); time.sleep(4)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert reader.stdout.readline().strip() == "8640"
    run = runner(config, db, key, key, "raw_telemetry", "validated", "quarantine")
    out, err = run.communicate(timeout=300)
    reader.wait(timeout=30)
    assert run.returncode == 0 and "run 0 ok" in out, err[-2000:]
    assert storage.read_partitions(db, DB_SCHEMA, "validated", None).height == 8640


@pytest.mark.parametrize("runs", [3])
def test_materializing_the_graph_three_times_gives_identical_tables_and_alert_ids(make_pipeline, runs):
    from itap_assets_tests.conftest import run_graph

    p = make_pipeline({"simulation": {"devices": 2, "days": 2, "sample_interval_s": 60, "fault_rate": 3.0}})
    tables = ["raw_telemetry", "validated", "quarantine", "features", "model", "scores", "explanations",
              "device_summaries", "alerts", "fleet_summary", "detection_metrics"]
    hashes = []
    for _ in range(runs):
        assert all(r.success for r in run_graph(p, ["DEV-0001", "DEV-0002"], ["2026-01-01", "2026-01-02"]))
        snapshot = {}
        for table in tables:
            frame = p.table(table).drop("computed_at", "trained_at", "model_blob", strict=False)
            snapshot[table] = int(frame.hash_rows().sum()) if frame.height else 0
        snapshot["alert_ids"] = tuple(sorted(p.table("alerts")["alert_id"]))
        hashes.append(snapshot)
    assert hashes[0] == hashes[1] == hashes[2]
    assert hashes[0]["alert_ids"]
