"""`make demo`: register the fleet, run the whole graph over every default partition, print what came out.

Runs go into the project's Dagster instance (DAGSTER_HOME, default .dagster/), so `make ui` shows them.
"""

from __future__ import annotations

import os
import sys
import time

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from itap_assets import storage
from itap_assets.core.simulator import device_ids, simulated_days
from itap_assets.partitions import DEVICE
from itap_assets.resources import DB_SCHEMA
from itap_assets.settings import PROJECT_ROOT, Settings, db_path, load_settings


def fleet_partitions(settings: Settings) -> tuple[list[str], list[str]]:
    """The devices and days the demo covers."""
    return device_ids(settings.simulation), [d.isoformat() for d in simulated_days(settings.simulation)]


def register_devices(instance: dg.DagsterInstance, devices: list[str]) -> list[str]:
    for device in devices:
        storage.check_device_id(device)
    known = set(instance.get_dynamic_partitions(DEVICE))
    new = [d for d in devices if d not in known]
    if new:
        instance.add_dynamic_partitions(DEVICE, new)
    return new


def range_tags(first: str, last: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def run_pipeline(instance: dg.DagsterInstance, devices: list[str], days: list[str]) -> list[tuple[str, float]]:
    """One run per job, each over the whole range of its partitions."""
    from itap_assets.definitions import defs
    from itap_assets.jobs import JOBS, PARTITIONING

    ranges = {
        "day_device": range_tags(f"{days[0]}|{devices[0]}", f"{days[-1]}|{devices[-1]}"),
        "device": range_tags(devices[0], devices[-1]),
        "day": range_tags(days[0], days[-1]),
        "none": {},
    }
    timings = []
    for job in JOBS:
        job_def = defs.resolve_job_def(job.name)
        kind = job.metadata[PARTITIONING]
        started = time.perf_counter()
        result = job_def.execute_in_process(instance=instance, tags=ranges[kind], raise_on_error=True)
        timings.append((job_def.name, time.perf_counter() - started))
        if not result.success:
            raise SystemExit(f"run of {job_def.name} failed: see `make ui`")
    return timings


def table_counts(path: str) -> list[tuple[str, int]]:
    with storage.connect(path) as con:
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE'"
            " ORDER BY table_name",
            [DB_SCHEMA],
        ).fetchall()
        return [(t, con.execute(f'SELECT count(*) FROM {DB_SCHEMA}."{t}"').fetchone()[0]) for (t,) in tables]


def main() -> None:
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster"))
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    settings = load_settings()
    devices, days = fleet_partitions(settings)
    with dg.DagsterInstance.get() as instance:
        new = register_devices(instance, devices)
        print(f"ITAP demo: {len(devices)} devices ({len(new)} newly registered) × {len(days)} days "
              f"({days[0]} … {days[-1]}) into {db_path()}")
        timings = run_pipeline(instance, devices, days)
    for job, seconds in timings:
        print(f"  run {job:<18} {seconds:6.1f} s")
    print("\nRows per table:")
    for table, rows in table_counts(str(db_path())):
        print(f"  itap.{table:<20} {rows:>10,}")
    print("\nOpen the UI with `make ui` (http://127.0.0.1:3000), or query the file: "
          f"duckdb {db_path()} \"SELECT * FROM itap.v_data_quality\"")


if __name__ == "__main__":
    sys.exit(main())
