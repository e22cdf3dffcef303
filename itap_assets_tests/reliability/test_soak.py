"""Run it for a month: 30 simulated days through the project's real sensors and schedules on a real instance (a
new device, a late file, a killed run, a reader holding the database, a day that fails validation) end with every
table equal, content hash for content hash, to one clean backfill of the same data (`soak.py` drives the month)."""

import json
import os
import shutil
import subprocess
import sys

import dagster as dg
import duckdb
import pytest
import yaml

from itap_assets.resources import DUCKDB_POOL
from itap_assets.settings import PROJECT_ROOT
from itap_assets_tests.reliability import soak

# Every asset table the month writes; the model's wall-clock `trained_at` is the one column that may differ.
TABLES = {"raw_telemetry": "", "validated": "", "quarantine": "", "partition_status": "", "features": "",
          "model": "EXCLUDE (trained_at)", "scores": "", "explanations": "", "device_summaries": "", "alerts": ""}


def deployment(root) -> dict[str, str]:
    """A DAGSTER_HOME with the project's dagster.yaml, a database and the soak's settings, as `make demo` sets them."""
    (root / "home").mkdir(parents=True)
    (root / "incoming").mkdir()
    shutil.copy(PROJECT_ROOT / "configs" / "dagster.yaml", root / "home" / "dagster.yaml")
    (root / "itap.yaml").write_text(yaml.safe_dump(soak.config(root / "incoming")), encoding="utf-8")
    return {**os.environ, "DAGSTER_HOME": str(root / "home"), "ITAP_CONFIG": str(root / "itap.yaml"),
            "ITAP_DB_PATH": str(root / "itap.duckdb"), "PYTHONUNBUFFERED": "1"}


def content_hash(db: str, table: str) -> tuple[int, str]:
    """(rows, md5 over the sorted md5 of every row's text): equal only if the tables hold the same rows."""
    with duckdb.connect(db, read_only=True) as con:
        return con.execute(
            f"SELECT count(*), md5(coalesce(string_agg(h, '' ORDER BY h), '')) FROM "
            f"(SELECT md5(t::VARCHAR) AS h FROM (SELECT * {TABLES[table]} FROM main.{table}) t)").fetchone()


@pytest.mark.long_running
def test_a_month_of_daily_operation_equals_one_clean_backfill(tmp_path):
    env, clean_env = deployment(tmp_path / "month"), deployment(tmp_path / "clean")
    soak.write_files(tmp_path / "clean" / "incoming")
    # The clean backfill runs beside the month (its own instance and database): the month is a chain of small
    # runs that leaves the second core idle.
    backfill = subprocess.Popen([sys.executable, "-m", "itap_assets.demo"], cwd=PROJECT_ROOT, env=clean_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    month = subprocess.run([sys.executable, "-m", "itap_assets_tests.reliability.soak", str(tmp_path / "month" /
                                                                                          "incoming")],
                           cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1500)
    out, err = backfill.communicate(timeout=900)
    assert backfill.returncode == 0, out[-3000:] + err[-3000:]
    assert month.returncode == 0, month.stdout[-3000:] + month.stderr[-5000:]
    days = {d["day"]: d["runs"] for d in map(json.loads, (l for l in month.stdout.splitlines() if l.startswith("{")))}
    assert sorted(days) == list(range(1, soak.DAYS + 1))
    assert f"telemetry_job 2026-01-10|{soak.NEW_DEVICE}..2026-01-10|{soak.NEW_DEVICE} ok" in days[soak.NEW_ON_DAY]
    # the late file for day 12 re-runs day 12 and the later days of its device, which read it
    assert f"daily_job 2026-01-12|{soak.LATE_DEVICE}..2026-01-15|{soak.LATE_DEVICE} ok" in days[soak.LATE_ARRIVES]
    killed = [r for r in days[soak.KILLED_DAY] if r.startswith("killed")]
    assert killed and "daily_job 2026-01-20|DEV-0001..2026-01-20|DEV-0004 ok" in days[soak.KILLED_DAY]
    assert any("read-only session" in r for r in days[soak.READER_DAY])
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        dead = instance.get_run_by_id(killed[0].split()[-1])
        assert dead.status == dg.DagsterRunStatus.FAILURE  # cleaned up without manual help
        assert not instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        slots = instance.event_log_storage.get_concurrency_info(DUCKDB_POOL)
        assert not slots.claimed_slots and not slots.pending_steps


    different = {t: (content_hash(env["ITAP_DB_PATH"], t), content_hash(clean_env["ITAP_DB_PATH"], t))
                 for t in TABLES}
    assert {t: h for t, h in different.items() if h[0] != h[1]} == {}
    # the failing day is the one partition both exclude, and both report it
    excluded = "SELECT day::VARCHAR, device_id FROM main.partition_status WHERE status = 'excluded'"
    for db in (env["ITAP_DB_PATH"], clean_env["ITAP_DB_PATH"]):
        with duckdb.connect(db, read_only=True) as con:
            assert con.execute(excluded).fetchall() == [("2026-01-07", soak.BAD_DEVICE)]
    assert "2026-01-07|DEV-0003 (15 of 144 rows rejected" in out
