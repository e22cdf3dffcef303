"""A month of operation, driven the way the Dagster daemon drives the project: every day the day's files arrive,
the sensors tick and the schedules fire at their times, and every run they request is executed through the
project's own launcher (`itap_assets.demo.execute`) against a real instance in DAGSTER_HOME.

    python -m itap_assets_tests.reliability.soak INCOMING         # the 30 days (ITAP_CONFIG, ITAP_DB_PATH set)
    python -m itap_assets_tests.reliability.soak --run JOB FIRST LAST   # one run, in a process the soak kills

The month has what a plant's month has: a new device on day 10, a file for day 12 that arrives on day 15, a run
killed with SIGKILL on day 20, a read-only SQL session holding the database during day 25, and a day whose data
fails validation (day 7 of DEV-0003, a tenth of its rows out of range). `write_files` writes the same data for
the one clean backfill the soak is compared with.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG as RANGE_END
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG as RANGE_START

from itap_assets.core.simulator import simulate_fleet
from itap_assets.partitions import DEVICE, range_tags
from itap_assets.resources import default_resources
from itap_assets.run_recovery import dead_run_cleanup
from itap_assets.schedules import daily_schedule, weekly_retraining_schedule
from itap_assets.sensors import device_discovery, model_training
from itap_assets.settings import SimulationSettings, db_path

START = date(2026, 1, 1)
DAYS = 30
SENSORS = ["temp_c", "vibration_g", "voltage_v", "current_a", "rpm"]
FLEET = SimulationSettings(devices=4, start=START, days=DAYS, sample_interval_s=600, seed=5, healthy_days=2,
                           fault_rate=1.0)
NEW_DEVICE, NEW_ON_DAY = "DEV-0004", 10
LATE_DEVICE, LATE_DAY, LATE_ARRIVES = "DEV-0002", 12, 15
BAD_DEVICE, BAD_DAY = "DEV-0003", 7
KILLED_DAY, READER_DAY = 20, 25


def config(incoming: Path) -> dict:
    """The soak's settings: files from `incoming`, the simulator's sensors and ranges, two baseline days."""
    return {
        "source": "files",
        "partitions": {"start_date": START.isoformat()},
        "ingestion": {"path": str(incoming / "*.csv"), "device_column": "device", "state_column": "state",
                      "settle_seconds": 0, "columns": {s: s for s in SENSORS},
                      "families": {"temp_c": "Temperature", "vibration_g": "Vibration", "voltage_v": "Voltage",
                                   "current_a": "Current", "rpm": "RPM"}},
        "sensors": {"temp_c": {"min": -40, "max": 250}, "vibration_g": {"min": 0, "max": 50},
                    "voltage_v": {"min": 0, "max": 1000}, "current_a": {"min": 0, "max": 500},
                    "rpm": {"min": 0, "max": 10000}},
        "model": {"training": {"first_days": 2}},
    }


def day_of(n: int) -> date:
    return START + timedelta(days=n - 1)


def device_day_files() -> dict[tuple[int, str], str]:
    """CSV text of every (day number, device) file of the month."""
    fleet = simulate_fleet(FLEET).with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    files = {}
    for (day, device), frame in fleet.group_by("day", "device_id"):
        n = (day - START).days + 1
        if device == NEW_DEVICE and n < NEW_ON_DAY:
            continue
        frame = frame.sort("ts").select("ts", pl.col("device_id").alias("device"), "state", *SENSORS)
        if (n, device) == (BAD_DAY, BAD_DEVICE):  # a logger fault: every tenth reading is far out of range
            frame = frame.with_columns(pl.when(pl.int_range(pl.len()) % 10 == 0).then(9999.0)
                                       .otherwise(pl.col("temp_c")).alias("temp_c"))
        files[(n, device)] = frame.write_csv()
    return files


def write_file(incoming: Path, n: int, device: str, text: str) -> None:
    tmp = incoming / f".{device}_{n:02d}.tmp"  # hidden, so discovery never sees the half-written file
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, incoming / f"{device}_{day_of(n).isoformat()}.csv")


def write_files(incoming: Path) -> None:
    """Every file of the month at once: the data of the clean backfill."""
    for (n, device), text in device_day_files().items():
        write_file(incoming, n, device, text)


def arrivals(n: int, files: dict[tuple[int, str], str]) -> list[tuple[int, str]]:
    """The files that arrive at the end of day n: that day's, except the late one, which comes on day 15."""
    due = [(d, dev) for d, dev in files if d == n and (d, dev) != (LATE_DAY, LATE_DEVICE)]
    return due + ([(LATE_DAY, LATE_DEVICE)] if n == LATE_ARRIVES else [])


class Daemon:
    """What the daemon does with the project's sensors and schedules: tick them, apply their dynamic partition
    requests, launch each requested run once per run key."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.resources = default_resources()
        self.cursors: dict[str, str | None] = {}
        self.run_keys: set[str] = set()
        self.kill_next = False
        self.log: list[str] = []

    def tick(self, sensor: dg.SensorDefinition) -> list[dg.RunRequest]:
        with dg.build_sensor_context(instance=self.instance, resources=self.resources,
                                     cursor=self.cursors.get(sensor.name)) as context:
            with dg.partition_loading_context(dynamic_partitions_store=self.instance):
                result = sensor(context)
        if isinstance(result, dg.SensorResult):
            self.cursors[sensor.name] = result.cursor if result.cursor is not None else self.cursors.get(sensor.name)
            for request in result.dynamic_partitions_requests or []:
                self.instance.add_dynamic_partitions(DEVICE, list(request.partition_keys))
            return list(result.run_requests or [])
        return [r for r in (result or []) if isinstance(r, dg.RunRequest)]

    def fire(self, schedule: dg.ScheduleDefinition, at: datetime) -> list[dg.RunRequest]:
        with dg.build_schedule_context(instance=self.instance, scheduled_execution_time=at) as context:
            result = schedule(context)
        return [r for r in (result if isinstance(result, list) else [result]) if isinstance(r, dg.RunRequest)]

    def launch(self, requests: list[dg.RunRequest], job: str | None = None) -> None:
        from itap_assets.demo import execute

        for request in requests:
            if request.run_key in self.run_keys:
                continue
            self.run_keys.add(request.run_key)
            job, tags = request.job_name or job, dict(request.tags)
            if self.kill_next:
                self.kill_next = False
                self.log.append(f"killed {job} {killed_run(self.instance, job, tags)}")
                continue
            result = execute(self.instance, job, tags, request.run_config or None)
            self.log.append(f"{job} {tags.get(RANGE_START, '')}..{tags.get(RANGE_END, '')} "
                            f"{'ok' if result.success else 'FAILED'}")
            if not result.success:
                raise SystemExit(f"run of {job} failed: {self.log[-1]}")

    def day(self, n: int) -> None:
        """The end of day n: its files have arrived; the sensors tick until quiet, the schedules fire."""
        next_day = datetime.combine(day_of(n) + timedelta(days=1), datetime.min.time())
        self.until_quiet(device_discovery)  # a device is registered in one tick, its partitions requested next
        self.until_quiet(dead_run_cleanup)
        self.launch(self.fire(daily_schedule, next_day + timedelta(hours=1)), daily_schedule.job_name)
        if next_day.weekday() == 0:
            self.launch(self.fire(weekly_retraining_schedule, next_day + timedelta(hours=3)),
                        weekly_retraining_schedule.job_name)
        self.until_quiet(model_training)  # first models, then the catch-up scoring of the days scored without one

    def until_quiet(self, sensor: dg.SensorDefinition) -> None:
        """Tick until a tick requests nothing new (what minutes of 60 s ticks do between two days)."""
        for _ in range(5):
            before = (len(self.run_keys), len(self.instance.get_dynamic_partitions(DEVICE)))
            self.launch(self.tick(sensor))
            if (len(self.run_keys), len(self.instance.get_dynamic_partitions(DEVICE))) == before:
                return


def killed_run(instance: dg.DagsterInstance, job: str, tags: dict[str, str]) -> str:
    """Execute the run in a process of its own and SIGKILL it once one of its steps has written its output."""
    proc = subprocess.Popen([sys.executable, "-m", "itap_assets_tests.reliability.soak", "--run", job,
                             tags[RANGE_START], tags[RANGE_END]], start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(job_name=job, tags=tags, statuses=[dg.DagsterRunStatus.STARTED]))
        if runs and instance.get_records_for_run(runs[0].run_id,
                                                 of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return runs[0].run_id
        if proc.poll() is not None:
            raise SystemExit(f"the run to kill ended by itself ({proc.returncode})")
        time.sleep(0.05)
    raise SystemExit("the run to kill did not start within 120 s")


def read_only_session(seconds: float) -> subprocess.Popen:
    """Another process holding the database open read-only, as an analyst's SQL session does."""
    code = ("import duckdb, sys, time; con = duckdb.connect(sys.argv[1], read_only=True); "
            "con.execute('SELECT count(*) FROM itap.alerts').fetchall(); print('open', flush=True); "
            f"time.sleep({seconds})")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db_path())], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "open"
    return proc


def month(incoming: Path) -> None:
    files = device_day_files()
    with dg.DagsterInstance.get() as instance:
        daemon = Daemon(instance)
        for n in range(1, DAYS + 1):
            for key in arrivals(n, files):
                write_file(incoming, *key, files[key])
            daemon.kill_next = n == KILLED_DAY
            reader = read_only_session(8) if n == READER_DAY else None
            started = time.monotonic()
            daemon.day(n)
            if reader is not None:
                assert reader.poll() is not None, "the read-only session outlived the day's runs"
                daemon.log.append("read-only session held the database during the day's first run")
            print(json.dumps({"day": n, "seconds": round(time.monotonic() - started, 1), "runs": daemon.log}),
                  flush=True)
            daemon.log = []


def main(argv: list[str]) -> None:
    if argv[0] == "--run":
        from itap_assets.demo import execute

        job, first, last = argv[1:4]
        with dg.DagsterInstance.get() as instance:
            execute(instance, job, range_tags(first, last))
        return
    month(Path(argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
