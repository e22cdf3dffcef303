"""device_discovery: registers devices the moment their telemetry is seen and requests runs for new data.

A device added and a run requested for it in the same tick fails (the partition does not exist yet when the run
is created), so new devices are registered in one tick and their partitions are requested in the next. Changed
sources (a new or modified file, a changed simulator config) are found by fingerprint in the cursor, and only they
are parsed; a late file for an old day re-materializes that day and the device's later days, which read it.
"""

import hashlib
import json
from datetime import date

import dagster as dg
import polars as pl

from itap_assets.assets.model import baseline_status_of
from itap_assets.assets.notifications import BACKFILL_TAG
from itap_assets.core.training import READY
from itap_assets.core.ingest import IncompleteFile, discover_files, read_file
from itap_assets.core.partition_ranges import rectangles
from itap_assets.core.simulator import device_ids, simulated_days
from itap_assets.jobs import daily_job, notification_job, scoring_job, telemetry_job, training_job
from itap_assets.partitions import DEVICE, day_device_key, invalid_devices, range_tags
from itap_assets.resources import ItapConfig, Warehouse
from itap_assets.run_recovery import recover_and_report
from itap_assets.settings import PROJECT_ROOT, Settings


def source_partitions(settings: Settings, known: dict[str, list] | None = None
                      ) -> dict[str, tuple[str, set[tuple[str, str]]]]:
    """Each data source's fingerprint and the (day, device) partitions it holds. A file whose fingerprint
    (mtime and size) is the one in `known` (the cursor's) is not parsed again: its partitions come from `known`."""
    if settings.source == "simulation":
        sim = settings.simulation
        signature = hashlib.sha1(sim.model_dump_json().encode()).hexdigest()
        pairs = {(d.isoformat(), dev) for d in simulated_days(sim) for dev in device_ids(sim)}
        return {"simulation": (signature, pairs)}
    known = known or {}
    out = {}
    for path in discover_files(settings.ingestion, PROJECT_ROOT):
        stat = path.stat()
        signature = f"{stat.st_mtime_ns}:{stat.st_size}"
        if str(path) in known and known[str(path)][0] == signature:
            out[str(path)] = (signature, {tuple(p) for p in known[str(path)][1]})
            continue
        try:
            frame = read_file(path, settings.ingestion, PROJECT_ROOT, not_before=settings.start_date,
                              settle_seconds=settings.ingestion.settle_seconds).select("day", "device_id").unique()
        except IncompleteFile:
            continue  # still being written: left out of the cursor, so a later tick plans it once complete
        out[str(path)] = (signature, {(d.isoformat(), dev) for d, dev in frame.iter_rows()})
    return out


def changed_partitions(known: dict[str, list], sources: dict) -> set[tuple[str, str]]:
    """The partitions to materialize again: those of new or changed sources (before and after the change), and
    every later day of the devices they touch, since day D+1 reads day D (feature warm-up, k-of-n smoothing,
    incidents open across midnight). A new day at the end of a series has no later days: it costs one partition."""
    changed: set[tuple[str, str]] = set()
    for name, (signature, pairs) in sources.items():
        if name not in known or known[name][0] != signature:
            changed |= pairs | {tuple(p) for p in known.get(name, (None, []))[1]}
    first_changed: dict[str, str] = {}
    for day, device in changed:
        first_changed[device] = min(day, first_changed.get(device, day))
    later = {(day, device) for _, pairs in sources.values() for day, device in pairs
             if device in first_changed and day > first_changed[device]}
    return changed | later


def plan(cursor: dict, sources: dict, registered: list[str], has_model: set[str]) -> tuple[dict, list[str], list]:
    """Pure planning for one tick: (new cursor, devices to register, [(job, first key, last key)]).
    The cursor keeps every source's fingerprint and partitions, and the partitions still to request."""
    known: dict[str, list] = cursor.get("files", {})
    pending = {tuple(p) for p in cursor.get("pending", [])} | changed_partitions(known, sources)
    files = {name: [signature, sorted(pairs)] for name, (signature, pairs) in sources.items()}
    new_devices = sorted({dev for _, dev in pending} - set(registered))
    ready = {p for p in pending if p[1] in set(registered)}
    runs = []
    for job, subset in ((daily_job.name, {p for p in ready if p[1] in has_model}),
                        (telemetry_job.name, {p for p in ready if p[1] not in has_model})):
        for first_day, last_day, first_dev, last_dev in rectangles(
            ((date.fromisoformat(d), dev) for d, dev in subset), registered
        ):
            runs.append((job, day_device_key(first_day, first_dev), day_device_key(last_day, last_dev)))
    new_cursor = {"files": files, "pending": sorted(pending - ready)}
    return new_cursor, new_devices, runs


@dg.sensor(
    jobs=[telemetry_job, daily_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def device_discovery(context: dg.SensorEvaluationContext, itap_config: ItapConfig, warehouse: Warehouse):
    """Register new devices; request one run per rectangle of new or changed (day, device) partitions:
    the whole day × device pipeline for devices with a model, ingestion to features for the others."""
    recover_and_report(context.instance, context.log.warning)  # a dead run would keep the DuckDB pool slot
    cursor = json.loads(context.cursor) if context.cursor else {}
    registered = list(context.instance.get_dynamic_partitions(DEVICE))
    # A key added by hand that is not a valid id holds no data, so it is never planned, and rectangles run in
    # registration order, so none spans it: it is only reported.
    invalid_devices(registered, context.log.warning)
    has_model = set(warehouse.query("SELECT DISTINCT device_id FROM model")["device_id"]) \
        if warehouse.has_table("model") else set()
    sources = source_partitions(itap_config.settings, cursor.get("files"))
    new_cursor, new_devices, runs = plan(cursor, sources, registered, has_model)
    generation = hashlib.sha1(json.dumps(new_cursor, sort_keys=True).encode()).hexdigest()[:12]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(job_name=job, run_key=f"{generation}:{first}:{last}", tags=range_tags(first, last))
            for job, first, last in runs
        ],
        dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(DEVICE, new_devices)] if new_devices else [],
        cursor=json.dumps(new_cursor, sort_keys=True),
    )


_BUSY = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
         dg.DagsterRunStatus.STARTED]


@dg.sensor(jobs=[training_job, scoring_job], minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.STOPPED)
def model_training(context: dg.SensorEvaluationContext, itap_config: ItapConfig, warehouse: Warehouse):
    """Devices without a model: a training_job run once a device's baseline is complete, then a scoring_job run for
    the featured days that have no scores (scoring skipped them while the device had no model). Nothing while a run
    is queued or in progress: it may be writing the features or the model this reads."""
    recover_and_report(context.instance, context.log.warning)  # a dead run would look busy forever
    if context.instance.get_run_ids(dg.RunsFilter(statuses=_BUSY), limit=1):
        return dg.SkipReason("a run is queued or in progress")
    if not warehouse.has_table("features"):
        return dg.SkipReason("no features yet")
    registered = list(context.instance.get_dynamic_partitions(DEVICE))
    bad = set(invalid_devices(registered, context.log.warning))
    devices = [d for d in registered if d not in bad]
    scored = "WHERE NOT EXISTS (SELECT 1 FROM scores s WHERE s.day = f.day AND s.device_id = f.device_id)" \
        if warehouse.has_table("scores") else ""
    with warehouse.session() as session:
        has_model = set(session.query("SELECT DISTINCT device_id FROM model")["device_id"]) \
            if warehouse.has_table("model") else set()
        status = baseline_status_of(session, itap_config.settings, [d for d in devices if d not in has_model])
        trained = pl.DataFrame({"device_id": [d for d in devices if d in has_model]}, schema={"device_id": pl.String})
        unscored = session.query(f"SELECT DISTINCT f.day, f.device_id FROM features f JOIN _trained USING (device_id) "
                                 f"{scored}", frames={"_trained": trained})
    ready = status.filter(pl.col("status") == READY)
    rows = ready["baseline_rows"].sum()
    requests = [dg.RunRequest(job_name=training_job.name, run_key=f"first-model:{a}:{b}:{rows}", tags=range_tags(a, b))
                for _, _, a, b in rectangles(((date.min, d) for d in ready["device_id"]), registered)]
    requests += [dg.RunRequest(job_name=scoring_job.name, run_key=f"unscored:{first}:{last}",
                               tags=range_tags(first, last))
                 for first, last in ((day_device_key(d1, a), day_device_key(d2, b))
                                     for d1, d2, a, b in rectangles(unscored.iter_rows(), registered))]
    for device, state, n, needed, progress in status.filter(pl.col("status") != READY).drop("start", "end").rows():
        context.log.info(f"device {device}: baseline {state} ({progress}, {n} of {needed} rows)")
    return requests or dg.SkipReason("every device with a baseline has a model and its featured days are scored")


@dg.sensor(job=notification_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def alert_delivery(context: dg.SensorEvaluationContext):
    """After new materializations of `alerts`: one notification_job run. When the latest of them came from a
    backfill, that run records its state changes as history instead of paging."""
    recover_and_report(context.instance, context.log.warning)
    records = context.instance.fetch_materializations(dg.AssetKey("alerts"), limit=1).records
    event = records[0] if records else None
    if event is None or str(event.storage_id) == context.cursor:
        return dg.SkipReason("no new materialization of alerts")
    run = context.instance.get_run_by_id(event.run_id)
    backfill = run is not None and BACKFILL_TAG in run.tags
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=f"alerts-{event.storage_id}",
            run_config={"ops": {"alert_notifications": {"config": {"backfill": backfill}}}},
        )],
        cursor=str(event.storage_id),
    )


SENSORS = [device_discovery, model_training, alert_delivery]
