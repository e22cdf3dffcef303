"""Runs side by side: the day × device and device jobs run once per block of devices, the blocks at the same time.
`python -m itap_assets.parallel_runs` is `make demo`'s plan run this way (docs/deployment.md, one machine).

Inside one run the steps form a chain (ingest → validation → features, scoring → alerts → summaries) and each
step handles the run's whole range of partitions, so an executor alone finds nothing to run in parallel there.
Parallelism comes from runs over disjoint blocks of devices, with the Parquet storage mode where writers never
contend. Each run executes in a process of its own, as Dagster's run launchers start runs, and its steps on the
configured executor (that process, more processes of this machine, or Dask workers). Processes, not threads:
two `execute_job` calls in threads of one process deadlock in Dagster 1.13 (a run's start reconfigures Python
logging while the other run's event handler holds its lock). Jobs still follow `make demo`'s order: every block
of one job finishes before the next job starts, and the jobs over days or over everything (fleet, notifications,
evaluation) run once, as in `run_plan`. The run processes open the instance of DAGSTER_HOME: it must be persistent.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import date

import dagster as dg

from itap_assets.core.parallel import MAX_THREADS_ENV, available_cpus
from itap_assets.core.partition_ranges import device_chunks
from itap_assets.demo import data_partitions, execute, register_devices, run_plan
from itap_assets.jobs import JOBS, PARTITIONING
from itap_assets.partitions import DEVICE, invalid_devices
from itap_assets.run_recovery import recover_and_report
from itap_assets.run_report import failure_message
from itap_assets.settings import Settings, load_settings

Run = tuple["dg.UnresolvedAssetJobDefinition", dict[str, str]]  # (job, run tags), as run_plan gives them
BY_DEVICE = ("day_device", "device")


def concurrent_runs(settings: Settings) -> int:
    """Runs at once: `execution.processes` with a parallel executor, one with the in-process executor (the
    embedded default keeps `make demo`'s one run at a time)."""
    return 1 if settings.execution.executor == "in_process" else settings.execution.processes


def parallel_plan(pairs: list[tuple[date, str]], device_order: list[str], blocks: int) -> list[list[Run]]:
    """The runs of each job in `JOBS` order: `run_plan` per block of devices for the jobs partitioned by device,
    `run_plan` of the whole set for the others."""
    wanted = {device for _, device in pairs}
    chunks = device_chunks([d for d in device_order if d in wanted], blocks)
    per_block = [run_plan([p for p in pairs if p[1] in set(chunk)], device_order) for chunk in chunks]
    whole = run_plan(pairs, device_order)
    stages = []
    for job in JOBS:
        plans = per_block if job.metadata[PARTITIONING] in BY_DEVICE else [whole]
        stages.append([(j, tags) for plan in plans for j, tags in plan if j.name == job.name])
    return [stage for stage in stages if stage]


@contextmanager
def cores_shared_by(workers: int) -> Iterator[None]:
    """The run processes started meanwhile each use their share of the cores (Polars' pool, ITAP's threads):
    each sized for the whole machine, two processes on two cores ran their steps a third slower than one."""
    share = str(max(1, available_cpus() // max(1, workers)))
    saved = {name: os.environ.get(name) for name in (MAX_THREADS_ENV, "POLARS_MAX_THREADS")}
    os.environ.update(dict.fromkeys(saved, share))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def execute_in_child(job_name: str, tags: dict[str, str]) -> tuple[str, str | None]:
    """One run in a run process: (run id, why it failed or None)."""
    with dg.DagsterInstance.get() as instance:
        result = execute(instance, job_name, tags)
        return result.run_id, None if result.success else failure_message(job_name, result)


def run_parallel(instance: dg.DagsterInstance, pairs: list[tuple[date, str]], workers: int
                 ) -> list[tuple[str, float, list[str]]]:
    """`demo.run_pipeline` with blocks of devices side by side: (job, seconds of its stage, run ids) in order.
    The run processes live as long as this call, so each imports the project once."""
    recover_and_report(instance, lambda note: print(f"note: {note}", flush=True))
    order = list(instance.get_dynamic_partitions(DEVICE))
    invalid_devices(order, lambda message: print(f"warning: {message}", file=sys.stderr))
    timings = []
    with cores_shared_by(workers), ProcessPoolExecutor(max_workers=max(1, workers),
                                                       mp_context=multiprocessing.get_context("spawn")) as pool:
        for stage in parallel_plan(pairs, order, workers):
            started = time.perf_counter()
            done = list(pool.map(execute_in_child, [job.name for job, _ in stage], [tags for _, tags in stage]))
            failed = [why for _, why in done if why]
            if failed:
                raise SystemExit(failed[0])
            timings.append((stage[0][0].name, time.perf_counter() - started, [run_id for run_id, _ in done]))
    return timings


def main() -> None:
    """The whole graph over every default partition with the settings' executor, blocks of devices side by side,
    into the instance of DAGSTER_HOME (persistent: the run processes open it); prints each job's seconds and its
    runs as JSON."""
    settings = load_settings()
    pairs = data_partitions(settings)
    with dg.DagsterInstance.get() as instance:
        register_devices(instance, sorted({device for _, device in pairs}))
        timings = run_parallel(instance, pairs, concurrent_runs(settings))
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
