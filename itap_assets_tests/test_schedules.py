from datetime import datetime, timezone

import dagster as dg

from itap_assets.partitions import range_tags
from itap_assets.schedules import daily_fleet_schedule, daily_schedule, weekly_retraining_schedule

AT = datetime(2026, 1, 3, 1, 0, tzinfo=timezone.utc)


def test_daily_schedule_asks_for_yesterday_and_every_device_in_one_run():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("device", ["DEV-0001", "DEV-0002", "DEV-0003"])
        [request] = daily_schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=AT))
    assert isinstance(request, dg.RunRequest)
    assert request.tags == {**request.tags, **range_tags("2026-01-02|DEV-0001", "2026-01-02|DEV-0003")}
    assert request.run_key == "daily-2026-01-02"


def test_daily_schedule_leaves_out_the_devices_whose_yesterday_the_sensor_already_ran():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("device", ["DEV-0001", "DEV-0002", "DEV-0003"])
        for key in ("2026-01-02|DEV-0001", "2026-01-01|DEV-0002"):  # DEV-0002's day before does not count
            instance.report_runless_asset_event(dg.AssetMaterialization("features", partition=key))
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=AT) as context:
            [request] = daily_schedule(context)
        assert request.tags == {**request.tags, **range_tags("2026-01-02|DEV-0002", "2026-01-02|DEV-0003")}
        instance.report_runless_asset_event(dg.AssetMaterialization("features", partition="2026-01-02|DEV-0002"))
        instance.report_runless_asset_event(dg.AssetMaterialization("features", partition="2026-01-02|DEV-0003"))
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=AT) as context:
            assert isinstance(daily_schedule(context), dg.SkipReason)


def test_daily_schedule_skips_when_no_device_is_registered():
    with dg.instance_for_test() as instance:
        result = daily_schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=AT))
    assert isinstance(result, dg.SkipReason)


def test_fleet_schedule_ranks_yesterday():
    with dg.instance_for_test() as instance:
        request = daily_fleet_schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=AT))
    assert request.partition_key == "2026-01-02"


def test_weekly_retraining_covers_all_devices_in_one_run():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("device", ["DEV-0001", "DEV-0002"])
        [request] = weekly_retraining_schedule(
            dg.build_schedule_context(instance=instance, scheduled_execution_time=AT))
    assert request.tags == {**request.tags, **range_tags("DEV-0001", "DEV-0002")}


def test_schedules_are_off_by_default():
    for schedule in (daily_schedule, daily_fleet_schedule, weekly_retraining_schedule):
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
