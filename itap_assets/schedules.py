"""Schedules: yesterday for the whole fleet in one run, and a weekly retraining. Both start STOPPED; turn them on
in the UI (Automation) or with `dagster schedule start <name>`."""

from datetime import date, timedelta

import dagster as dg

from itap_assets.core.partition_ranges import rectangles
from itap_assets.jobs import daily_job, fleet_job, training_job
from itap_assets.partitions import DEVICE, day_device_key, invalid_devices, range_tags, split_key


def device_ranges(context: dg.ScheduleEvaluationContext, skip: set[str] = frozenset()) -> list[tuple[str, str]]:
    """(first, last) of each block of consecutive registered devices that are valid ids and not in `skip`, in
    registration order: one range for a healthy fleet; a key added by hand that is not a valid id is reported and
    falls between two ranges, so no run includes it."""
    keys = context.instance.get_dynamic_partitions(DEVICE)
    bad = set(invalid_devices(keys, context.log.warning)) | set(skip)
    return [(a, b) for _, _, a, b in rectangles(((date.min, d) for d in keys if d not in bad), keys)]


@dg.schedule(job=daily_job, cron_schedule="0 1 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def daily_schedule(context: dg.ScheduleEvaluationContext):
    """At 01:00 UTC: yesterday × every registered device whose yesterday has not been featurized yet (the
    device_discovery sensor runs a day as soon as its files arrive), ingest to alerts, as one run (not one per
    device). A day run twice would only cost time: runs are deterministic."""
    if not context.instance.get_dynamic_partitions(DEVICE):
        return dg.SkipReason("no devices registered yet (the device_discovery sensor registers them)")
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).date()
    done = {split_key(k)[1] for k in context.instance.get_materialized_partitions(dg.AssetKey("features"))
            if split_key(k)[0] == yesterday}
    ranges = device_ranges(context, skip=done)
    if not ranges:
        return dg.SkipReason(f"{yesterday} is featurized for every registered device already")
    return [dg.RunRequest(
        run_key=f"daily-{yesterday}" + (f"-{i}" if i else ""),
        tags=range_tags(day_device_key(yesterday, first), day_device_key(yesterday, last)),
    ) for i, (first, last) in enumerate(ranges)]


@dg.schedule(job=fleet_job, cron_schedule="30 2 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def daily_fleet_schedule(context: dg.ScheduleEvaluationContext):
    """At 02:30 UTC, after the daily run: rank the fleet for yesterday."""
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"fleet-{yesterday}", partition_key=yesterday)


@dg.schedule(job=training_job, cron_schedule="0 3 * * 1", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def weekly_retraining_schedule(context: dg.ScheduleEvaluationContext):
    """Mondays 03:00 UTC: refit every registered device on its configured window, as of yesterday. A window
    whose data changed (model.training.last_days slides) becomes a new version, an unchanged one keeps its
    version, a device whose baseline still accumulates is skipped."""
    ranges = device_ranges(context)
    if not ranges:
        return dg.SkipReason("no devices registered yet")
    today = context.scheduled_execution_time.date()
    as_of = {"ops": {"model": {"config": {"as_of": (today - timedelta(days=1)).isoformat()}}}}
    return [dg.RunRequest(run_key=f"retrain-{today}" + (f"-{i}" if i else ""), tags=range_tags(first, last),
                          run_config=as_of)
            for i, (first, last) in enumerate(ranges)]


SCHEDULES = [daily_schedule, daily_fleet_schedule, weekly_retraining_schedule]
