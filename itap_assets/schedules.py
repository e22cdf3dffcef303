"""Schedules: yesterday for the whole fleet in one run, and a weekly retraining. Both start STOPPED; turn them on
in the UI (Automation) or with `dagster schedule start <name>`."""

from datetime import timedelta

import dagster as dg

from itap_assets.jobs import daily_job, fleet_job, training_job
from itap_assets.partitions import DEVICE, day_device_key, range_tags


@dg.schedule(job=daily_job, cron_schedule="0 1 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def daily_schedule(context: dg.ScheduleEvaluationContext):
    """At 01:00 UTC: yesterday × every registered device, ingest to alerts, as one run (not one per device)."""
    devices = context.instance.get_dynamic_partitions(DEVICE)
    if not devices:
        return dg.SkipReason("no devices registered yet (the device_discovery sensor registers them)")
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).date()
    return dg.RunRequest(
        run_key=f"daily-{yesterday}",
        tags=range_tags(day_device_key(yesterday, devices[0]), day_device_key(yesterday, devices[-1])),
    )


@dg.schedule(job=fleet_job, cron_schedule="30 2 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def daily_fleet_schedule(context: dg.ScheduleEvaluationContext):
    """At 02:30 UTC, after the daily run: rank the fleet for yesterday."""
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"fleet-{yesterday}", partition_key=yesterday)


@dg.schedule(job=training_job, cron_schedule="0 3 * * 1", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def weekly_retraining_schedule(context: dg.ScheduleEvaluationContext):
    """Mondays 03:00 UTC: a new model version for every registered device from its configured baseline window."""
    devices = context.instance.get_dynamic_partitions(DEVICE)
    if not devices:
        return dg.SkipReason("no devices registered yet")
    week = context.scheduled_execution_time.date().isoformat()
    return dg.RunRequest(run_key=f"retrain-{week}", tags=range_tags(devices[0], devices[-1]))


SCHEDULES = [daily_schedule, daily_fleet_schedule, weekly_retraining_schedule]
