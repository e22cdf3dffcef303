"""What `make demo` prints when a run fails (issue 20): the failing check or step, the partition and the numbers,
read from the run's event log, not only "see `make ui`"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import date

import duckdb

from itap_assets.definitions import all_assets
from itap_assets.run_report import failure_message
from itap_assets.settings import DEFAULT_SENSORS, PROJECT_ROOT
from itap_assets_tests.conftest import write_config


def make_demo(tmp_path, config: dict) -> subprocess.CompletedProcess:
    """`make demo` in a process of its own on `config`, with a temporary DAGSTER_HOME and database."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "configs" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "ITAP_DB_PATH": str(tmp_path / "itap.duckdb"),
           "ITAP_CONFIG": str(write_config(tmp_path / "itap.yaml", config))}
    return subprocess.run([sys.executable, "-m", "itap_assets.demo"], cwd=PROJECT_ROOT, env=env, text=True,
                          capture_output=True, timeout=300)


def test_make_demo_names_the_failing_check_its_partition_and_numbers(tmp_path):
    """The config expects a sensor the simulator does not produce: a structure error, which still blocks."""
    sensors = {name: spec.model_dump() for name, spec in DEFAULT_SENSORS.items()}
    sensors["pressure_bar"] = {"family": "Pressure", "min": 0, "max": 100}
    done = make_demo(tmp_path, {"simulation": {"devices": 1, "days": 1, "sample_interval_s": 600}, "sensors": sensors})
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("run of telemetry_job failed (run ")
    assert last.endswith(
        "): check validated:structure_and_quarantine_share failed: 1 of 1 partition(s) excluded from downstream "
        "steps: 2026-01-01|DEV-0001 (structure: missing column 'pressure_bar' (all 144 rows quarantined)); "
        "see `make ui`")
    with duckdb.connect(str(tmp_path / "itap.duckdb"), read_only=True) as con:
        assert con.sql("SELECT day, status FROM partition_status").fetchall() == [(date(2026, 1, 1), "excluded")]
        tables = con.sql("SELECT table_name FROM information_schema.tables").fetchall()
    assert ("features",) not in tables  # the blocking check stopped every downstream step


def test_a_failed_step_is_named_with_its_error(make_pipeline, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "logger_X1.csv").write_text("ts,temp\n2026-04-10 10:00:00,40\n2026-04-10 25:61:00,41\n", encoding="utf-8")
    p = make_pipeline({
        "source": "files", "partitions": {"start_date": "2026-04-01"},
        "ingestion": {"path": str(data / "*.csv"), "timestamp_column": "ts", "columns": {"temp": "temp_c"},
                      "families": {"temp_c": "Temperature"}, "device_from_path": r"logger_(?P<device>[A-Za-z0-9]+)",
                      "settle_seconds": 0},
    })
    p.register("X1")
    result = p.materialize(all_assets, first=f"{date(2026, 4, 10)}|X1", raise_on_error=False,
                           selection=["raw_telemetry", "validated", "quarantine"])
    message = failure_message("telemetry_job", result)
    assert message == (f"run of telemetry_job failed (run {result.run_id[:8]}): step raw_telemetry failed: "
                       f"{data / 'logger_X1.csv'}: line 3, column 'ts': cannot parse timestamp '2026-04-10 25:61:00'"
                       " as ISO 8601 (set timestamp_format:); see `make ui`")


def test_make_demo_runs_the_replayed_hour_series_to_the_end_and_notes_the_excluded_day(tmp_path):
    from itap_assets_tests.reliability.test_partition_isolation import AFFECTED, DEVICE, config, logger_lines

    data = tmp_path / "data"
    data.mkdir()
    (data / f"logger_{DEVICE}.csv").write_text("ts,temp\n" + "\n".join(logger_lines()) + "\n", encoding="utf-8")
    done = make_demo(tmp_path, config(data))
    assert done.returncode == 0, done.stderr[-2000:]
    notes = [line for line in done.stdout.splitlines() if line.startswith("note: check validated:")]
    assert notes == [f"note: check validated:structure_and_quarantine_share: 1 of 6 partition(s) excluded from "
                     f"downstream steps: {AFFECTED}|{DEVICE} (12 of 180 rows rejected (6.7%) > "
                     f"validation.max_quarantine_share 5.0%: duplicate_conflict 24)"]
    assert "run evaluation_job" in done.stdout and "Alert feed (" in done.stdout
    assert "Alert feed (0 " not in done.stdout
