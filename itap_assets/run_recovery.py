"""Runs whose process died never block later runs.

A run killed with SIGKILL (or its terminal closed) stays STARTED in the instance and keeps its `itap_duckdb` pool
slot, so every later run waits for it forever; Dagster's own run monitoring cannot see that with the default run
launcher. `recover_dead_runs`, called before `make demo` launches a run and on every sensor tick, marks such runs
failed, naming the dead pid, and frees their slots; it also frees slots still held by runs that have finished
(the UI's Terminate of a dead run leaves them claimed).

How a run's process is known: runs the project launches carry the launching process's host, pid and start time as
tags (`launch_tags`); a run launched by the daemon or the UI on this host names its run worker's pid in the
in-process executor's first engine events ("Executing steps in process (pid: N)"), checked against that event's
time so a reused pid is not taken for the dead worker; that event names no host, so it is trusted only when the
instance lives in local SQLite files. Runs with neither, or from another host, are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.tags import (ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG,
                                        BACKFILL_ID_TAG)

from itap_assets.jobs import ALL_JOBS
from itap_assets.processes import ProcessIdentity, current_process, gone_since, host_name, is_gone

RECOVERED_TAG = "itap/recovered"  # on a run marked failed because its process was gone: run again once
HOST_TAG = "itap/launcher_host"
PID_TAG = "itap/launcher_pid"
START_TAG = "itap/launcher_start_ticks"

JOB_NAMES = {job.name for job in ALL_JOBS}
# Kept on the run again: its partitions, and that it belongs to a backfill (its alerts are history, not pages).
KEPT_TAGS = (ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG, BACKFILL_ID_TAG)
_UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
               dg.DagsterRunStatus.CANCELING]


@dataclass(frozen=True)
class Cleanup:
    run_id: str
    job_name: str
    dead_pid: int | None  # None: the run had finished, only its slots were left claimed

    def note(self) -> str:
        if self.dead_pid is None:
            return f"freed the pool slots still held by finished run {self.run_id} ({self.job_name})"
        return (f"cleaned up run {self.run_id} ({self.job_name}, dead pid {self.dead_pid}): marked failed, "
                "pool slots freed")


def launch_tags() -> dict[str, str]:
    """Tags naming this process, for the runs it launches and executes itself."""
    me = current_process()
    tags = {HOST_TAG: me.host, PID_TAG: str(me.pid)}
    if me.start_ticks is not None:
        tags[START_TAG] = str(me.start_ticks)
    return tags


def own_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """The unfinished runs this process launched."""
    return list(instance.get_runs(dg.RunsFilter(statuses=_UNFINISHED, tags=launch_tags())))


def _tagged_process(run: dg.DagsterRun) -> ProcessIdentity | None:
    if PID_TAG not in run.tags:
        return None
    start = run.tags.get(START_TAG)
    return ProcessIdentity(run.tags.get(HOST_TAG, ""), int(run.tags[PID_TAG]), int(start) if start else None)


def _worker_pid_gone(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The pid of a daemon- or UI-launched run's worker when that worker is gone; None when alive or unknown.
    The event names no host, so it is trusted only with the instance in local SQLite files (one host)."""
    if run.status not in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING):
        return None
    if not isinstance(instance.run_storage, SqliteRunStorage):
        return None
    for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT,
                                                 limit=5).records:
        entry = record.event_log_entry
        pid = entry.dagster_event.engine_event_data.metadata.get("pid") if entry.dagster_event else None
        if pid is not None:
            pid = int(pid.value)
            return pid if gone_since(pid, entry.timestamp) else None
    return None


def dead_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The pid of `run`'s process when that process is gone from this host; None when alive or unknown."""
    process = _tagged_process(run)
    if process is None:
        return _worker_pid_gone(instance, run)
    if process.host != host_name():
        return None
    return process.pid if is_gone(process) else None


def free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def _runs_holding_slots(instance: dg.DagsterInstance) -> set[str]:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return set()
    run_ids = set()
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        run_ids |= {slot.run_id for slot in info.claimed_slots} | {step.run_id for step in info.pending_steps}
    return run_ids


def recover_dead_runs(instance: dg.DagsterInstance) -> list[Cleanup]:
    """Mark failed every unfinished run whose process is gone and free its pool slots; free the slots of runs
    that finished. Returns what was cleaned."""
    done = []
    for run in instance.get_runs(dg.RunsFilter(statuses=_UNFINISHED)):
        pid = dead_pid(instance, run)
        if pid is None:
            continue
        host = run.tags.get(HOST_TAG, host_name())
        # slots and tag first: whoever sees the run failed sees it without slots and marked to be run again
        free_slots(instance, run.run_id)
        instance.add_run_tags(run.run_id, {RECOVERED_TAG: "dead_process"})
        instance.report_run_failed(run, f"Marked failed by ITAP: the process that ran this run (pid {pid} on "
                                        f"{host}) is gone (killed or crashed); its pool slots are freed and "
                                        "the dead_run_cleanup sensor runs it again.")
        done.append(Cleanup(run.run_id, run.job_name, pid))
    for run_id in sorted(_runs_holding_slots(instance)):
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            free_slots(instance, run_id)
            done.append(Cleanup(run_id, run.job_name if run else "deleted run", None))
    return done


def recover_and_report(instance: dg.DagsterInstance, report: Callable[[str], None]) -> None:
    """`recover_dead_runs`, each cleanup reported as one line (the demo prints it, a sensor logs it)."""
    for cleanup in recover_dead_runs(instance):
        report(cleanup.note())


def rerun_requests(instance: dg.DagsterInstance, after: float | None) -> tuple[list[dg.RunRequest], float | None]:
    """One run again of each run marked failed for a dead process since `after` (an update timestamp): same job,
    partition range and run config, so its partitions end as if it had not died. The run key makes it once."""
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE],
                                                     tags={RECOVERED_TAG: "dead_process"},
                                                     updated_after=None if after is None else
                                                     datetime.fromtimestamp(after, timezone.utc)))
    requests = []
    for record in sorted(records, key=lambda r: r.create_timestamp):
        run = record.dagster_run
        if run.job_name not in JOB_NAMES:
            continue
        kept = {k: v for k, v in run.tags.items() if k in KEPT_TAGS or not k.startswith(("dagster/", ".dagster",
                                                                                          "itap/"))}
        requests.append(dg.RunRequest(job_name=run.job_name, run_key=f"rerun-{run.run_id}", tags=kept,
                                      run_config=dict(run.run_config)))
    latest = max((r.update_timestamp.timestamp() for r in records), default=after)
    return requests, latest


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING, jobs=ALL_JOBS)
def dead_run_cleanup(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """On by default, so wherever the daemon runs (`make ui`) a dead run is cleaned within 30 s, even with the
    project's other sensors off, and then run again once (whoever cleaned it: this sensor, another sensor or
    `make demo`)."""
    notes: list[str] = []
    recover_and_report(context.instance, notes.append)
    for note in notes:
        context.log.warning(note)
    requests, latest = rerun_requests(context.instance, float(context.cursor) if context.cursor else None)
    return dg.SensorResult(
        run_requests=requests,
        cursor=None if latest is None else repr(latest),
        skip_reason=None if requests else dg.SkipReason("; ".join(notes) or "no run with a dead process"),
    )
