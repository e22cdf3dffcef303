"""`make demo`: register the fleet, run the whole graph over every default partition, print what came out.

Runs go into the project's Dagster instance (DAGSTER_HOME, default .dagster/), so `make ui` shows them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import date

import dagster as dg
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import (ManagedGrpcPythonEnvCodeLocationOrigin, RemoteJobOrigin,
                                         RemoteRepositoryOrigin)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from itap_assets import storage
from itap_assets.core.ingest import available_partitions
from itap_assets.core.partition_ranges import day_runs, rectangles
from itap_assets.core.simulator import device_ids, simulated_days
from itap_assets.jobs import JOBS, PARTITIONING
from itap_assets.partitions import DEVICE, day_device_key, invalid_devices, range_tags
from itap_assets.resources import DB_SCHEMA
from itap_assets.run_interrupts import stop_waiting_runs_on_signal
from itap_assets.run_recovery import launch_tags, recover_and_report
from itap_assets.run_report import failure_message, run_notes
from itap_assets.settings import PROJECT_ROOT, Settings, db_path, load_settings

CODE_LOCATION = "itap"  # workspace.yaml's location_name


def data_partitions(settings: Settings) -> list[tuple[date, str]]:
    """The (day, device) partitions that have data: the simulated fleet, or what the files hold."""
    if settings.source == "files":
        found = available_partitions(settings.ingestion, PROJECT_ROOT, not_before=settings.start_date,
                                     on_incomplete=lambda why: print(f"note: not read this run: {why}", flush=True))
        return list(found.iter_rows())
    return [(d, dev) for d in simulated_days(settings.simulation) for dev in device_ids(settings.simulation)]


def register_devices(instance: dg.DagsterInstance, devices: list[str]) -> list[str]:
    for device in devices:
        storage.check_device_id(device)
    known = set(instance.get_dynamic_partitions(DEVICE))
    new = [d for d in devices if d not in known]
    if new:
        instance.add_dynamic_partitions(DEVICE, new)
    return new


def run_plan(pairs: list[tuple[date, str]], device_order: list[str]) -> list[tuple[dg.UnresolvedAssetJobDefinition,
                                                                                   dict[str, str]]]:
    """(job, run tags) for every job in order: as few runs as the partitions with data allow (one per rectangle
    of days × devices; for the whole simulated fleet, one run per job)."""
    rects = rectangles(pairs, device_order)
    tags = {
        "day_device": [range_tags(day_device_key(d1, a), day_device_key(d2, b)) for d1, d2, a, b in rects],
        "device": [range_tags(a, b) for a, b in dict.fromkeys((a, b) for _, _, a, b in rects)],
        "day": [range_tags(d1.isoformat(), d2.isoformat()) for d1, d2 in day_runs(d for d, _ in pairs)],
        "none": [{}],
    }
    return [(job, run_tags) for job in JOBS for run_tags in tags[job.metadata[PARTITIONING]]]


def project_job(name: str) -> dg.JobDefinition:
    """Job `name` of the project's Definitions, rebuilt by name (what `dagster.execute_job` needs)."""
    from itap_assets.definitions import defs

    return defs.resolve_job_def(name)


def workspace_origin(job_name: str) -> RemoteJobOrigin:
    """Where the UI files a run: job `job_name` of the code location `itap` that workspace.yaml loads. A run
    created by `execute_job` has no such origin, so the UI listed none of them under their job or on the timeline."""
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name="itap_assets.definitions",
                             working_directory=str(PROJECT_ROOT)),
        location_name=CODE_LOCATION,
    )
    return RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME).get_job_origin(job_name)


def execute(instance: dg.DagsterInstance, job_name: str, tags: dict[str, str],
            run_config: dict | None = None) -> dg.JobExecutionResult:
    """One run of a project job in this process, executed as a launched run is (what `execute_job` does, with the
    workspace's origin): `execute_in_process` would keep every step's output in memory until the run ends (a day
    of a large fleet's features is gigabytes). The run's tags name this process, so a later launch can tell when
    it died; SIGTERM/SIGINT stop it even while it waits for a pool slot."""
    job = dg.build_reconstructable_job("itap_assets.demo", "project_job", reconstructable_args=(job_name,))
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the event log keeps everything
    run = instance.create_run_for_job(
        job_def=job.get_definition(), run_config={**quiet, **(run_config or {})}, tags={**tags, **launch_tags()},
        remote_job_origin=workspace_origin(job_name), job_code_origin=job.get_python_origin(),
    )
    with stop_waiting_runs_on_signal(instance), execute_run(job, run, instance) as result:
        for note in run_notes(result):  # partitions a check excluded while the rest of the run went on
            print(f"note: {note}", flush=True)
        return result


def run_pipeline(instance: dg.DagsterInstance, pairs: list[tuple[date, str]]) -> list[tuple[str, float]]:
    """Execute the plan in this process against the project's instance, after cleaning up runs whose process
    died (they would hold the DuckDB pool slot forever)."""
    recover_and_report(instance, lambda note: print(f"note: {note}", flush=True))
    timings = []
    order = list(instance.get_dynamic_partitions(DEVICE))
    # A key added by hand that is not a valid id holds no data, and no rectangle spans it: only reported.
    invalid_devices(order, lambda message: print(f"warning: {message}", file=sys.stderr))
    for job, tags in run_plan(pairs, order):
        started = time.perf_counter()
        result = execute(instance, job.name, tags)
        timings.append((job.name, time.perf_counter() - started))
        if not result.success:
            raise SystemExit(failure_message(job.name, result))
    return timings


def table_counts(path: str) -> list[tuple[str, int]]:
    """Rows per table; in the Parquet mode the tables are the catalog's views over the tree, so tables and views
    count alike, without the operator views (v_*) and internal names (_*)."""
    with storage.connect(path) as con:
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? "
            "AND table_name NOT LIKE 'v\\_%' ESCAPE '\\' AND table_name NOT LIKE '\\_%' ESCAPE '\\' "
            "ORDER BY table_name",
            [DB_SCHEMA],
        ).fetchall()
        return [(t, con.execute(f'SELECT count(*) FROM {DB_SCHEMA}."{t}"').fetchone()[0]) for (t,) in tables]


def print_report(path: str) -> None:
    """The alert feed, the strongest explained anomalies and the quality figures, as an operator reads them."""
    with storage.connect(path) as con:
        def rows(sql: str) -> list[tuple]:
            return con.execute(sql).fetchall()

        feed = rows(
            "SELECT severity, status, start_ts, end_ts, device_id, cause, route, confidence, max_score, n_events, "
            "families FROM v_alerts WHERE suppressed_by IS NULL ORDER BY start_ts"
        ) if storage.table_exists(con, DB_SCHEMA, "v_alerts") else []
        print(f"\nAlert feed ({len(feed)} active incidents):")
        for sev, status, start, end, dev, cause, route, conf, score, n, fams in feed:
            top = ", ".join(f"{k} {v:.0f}%" for k, v in list(json.loads(fams or "{}").items())[:2])
            print(f"  {sev:<8} {status:<8} | {start:%Y-%m-%d %H:%M} → {end:%H:%M} | {dev} | {cause} | confidence "
                  f"{conf:.2f} | x{score:.1f} threshold | {n} events | → {route} | {top}")
        if storage.table_exists(con, DB_SCHEMA, "explanations"):
            print("\nStrongest explained anomalies:")
            for dev, ts, score, fams, feats in rows(
                "SELECT device_id, ts, score, family_pct, top_features FROM explanations "
                "WHERE family_pct IS NOT NULL ORDER BY score DESC LIMIT 3"
            ):
                print(f"  {dev} at {ts:%Y-%m-%d %H:%M:%S}  score {score:.2f}")
                shares = sorted(((v, k) for k, v in fams.items() if v), reverse=True)
                print("    families: " + ", ".join(f"{k} {v:.1f}%" for v, k in shares))
                print("    top features: " + ", ".join(f"{e['feature']} {e['pct']:.1f}%" for e in feats))
        if storage.table_exists(con, DB_SCHEMA, "detection_metrics"):
            print("\nQuality against the simulator's labels (training days left out):")
            for metric, value in rows(
                "SELECT metric, value FROM detection_metrics WHERE scope = 'all' AND metric IN ("
                + ", ".join(f"'{m}'" for m in REPORTED_METRICS) + ") ORDER BY metric"
            ):
                print(f"  {metric:<48} {'n/a' if value is None else f'{value:.3f}'}")


REPORTED_METRICS = (
    "detection.critical_episode_recall",
    "detection.episode_recall",
    "detection.false_alarm_rate",
    "detection.false_alarm_rate_excl_post_fault",
    "detection.roc_auc",
    "detection.roc_auc_excl_post_fault",
    "root_cause.accuracy",
    "alerts.critical_episode_alert_recall",
    "alerts.alert_precision",
    "alerts.alert_precision_with_evidence_window",
    "alerts.episode_single_incident",
    "alerts.episode_route_accuracy",
    "alerts.episode_cause_accuracy",
    "alerts.alerts_per_fault_free_device_day",
    "alerts.alerts_per_flagged_point",
)


def main() -> None:
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster"))
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    settings = load_settings()
    pairs = data_partitions(settings)
    devices = sorted({dev for _, dev in pairs})
    days = sorted({d for d, _ in pairs})
    with dg.DagsterInstance.get() as instance:
        new = register_devices(instance, devices)
        print(f"ITAP demo ({settings.source}): {len(devices)} devices ({len(new)} newly registered) × {len(days)} "
              f"days ({days[0]} … {days[-1]}), {len(pairs)} partitions, into {db_path()}")
        timings = run_pipeline(instance, pairs)
    for job, seconds in timings:
        print(f"  run {job:<18} {seconds:6.1f} s")
    print("\nRows per table:")
    for table, rows in table_counts(str(db_path())):
        print(f"  itap.{table:<20} {rows:>10,}")
    print_report(str(db_path()))
    print("\nOpen the UI with `make ui` (http://127.0.0.1:3000), or query the file: "
          f"duckdb {db_path()} \"SELECT * FROM itap.v_data_quality\"")


if __name__ == "__main__":
    sys.exit(main())
