"""Devices come and go, retraining means something: a device without a model never fails the fleet's run (it is
skipped while its baseline accumulates, then the training sensor trains and scores it); a sliding window makes a
new version only when its data changed; a pin chooses the version scoring uses."""

from datetime import datetime, timezone

import dagster as dg
import polars as pl
import pytest

from itap_assets.definitions import all_assets
from itap_assets.jobs import daily_job, scoring_job, telemetry_job, training_job
from itap_assets.partitions import range_tags
from itap_assets.schedules import weekly_retraining_schedule
from itap_assets.sensors import model_training
from itap_assets_tests.conftest import Pipeline, write_config

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
FLEET = {"simulation": {"devices": 2, "days": 4, "sample_interval_s": 60, "healthy_days": 1}}


def _run(p: Pipeline, job, first: str, last: str | None = None, run_config: dict | None = None):
    return dg.materialize(all_assets, instance=p.instance, resources=p.resources(), selection=job.selection,
                          tags=range_tags(first, last or first), run_config=run_config, raise_on_error=False)


def _tick(p: Pipeline):
    return model_training(dg.build_sensor_context(instance=p.instance, resources=p.resources()))


def _versions(p: Pipeline, device: str = "DEV-0001") -> list[tuple]:
    return p.sql(f"SELECT version, training_start::DATE::VARCHAR FROM itap.model WHERE device_id = '{device}' "
                 "ORDER BY version").rows()


def _scored_versions(p: Pipeline, day: str) -> list[tuple]:
    return p.sql(f"SELECT device_id, min(model_version), max(model_version) FROM itap.scores WHERE day = '{day}' "
                 "GROUP BY ALL ORDER BY ALL").rows()


def _weekly_retraining(at: datetime) -> dg.RunRequest:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("device", ["DEV-0001", "DEV-0002"])
        [request] = weekly_retraining_schedule(dg.build_schedule_context(instance=instance,
                                                                         scheduled_execution_time=at))
    return request


def test_a_new_device_is_skipped_while_its_baseline_accumulates_then_trained_and_scored(make_pipeline):
    p = make_pipeline({**FLEET, "model": {"training": {"first_days": 2}}})
    p.register("DEV-0001")
    assert _run(p, telemetry_job, f"{DAYS[0]}|DEV-0001", f"{DAYS[1]}|DEV-0001").success
    assert _run(p, training_job, "DEV-0001").success
    assert _run(p, scoring_job, f"{DAYS[0]}|DEV-0001", f"{DAYS[1]}|DEV-0001").success
    p.register("DEV-0002")  # new on day 3: the daily run for the fleet goes on, DEV-0002 is listed as not scored
    daily = _run(p, daily_job, f"{DAYS[2]}|DEV-0001", f"{DAYS[2]}|DEV-0002")
    assert daily.success
    assert _scored_versions(p, DAYS[2]) == [("DEV-0001", 1, 1)]
    [scores] = [m for m in daily.get_asset_materialization_events() if m.asset_key == dg.AssetKey("scores")][:1]
    meta = scores.materialization.metadata
    assert meta["devices_without_model"].value == 1
    assert "| DEV-0002 | accumulating | 1380 | 200 | 1 of 2 days |" in meta["not_scored"].value  # rows of rows needed
    assert isinstance(_tick(p), dg.SkipReason)  # one day of two: nothing to train yet
    retrain = _run(p, training_job, "DEV-0001", "DEV-0002")  # a fleet retraining skips it too
    assert retrain.success and _versions(p, "DEV-0002") == []
    [model] = [m.materialization.metadata for m in retrain.get_asset_materialization_events()][:1]
    assert model["accumulating"].value == 1
    assert "| DEV-0002 | accumulating |" in model["not_trained"].value and "1 of 2 days" in model["not_trained"].value

    assert _run(p, daily_job, f"{DAYS[3]}|DEV-0001", f"{DAYS[3]}|DEV-0002").success
    [train] = _tick(p)
    assert (train.job_name, train.tags) == (training_job.name, {**train.tags, **range_tags("DEV-0002", "DEV-0002")})
    assert _run(p, training_job, "DEV-0002").success
    assert _versions(p, "DEV-0002") == [(1, DAYS[2])]  # its own first two days, not the fleet's
    [catch_up] = _tick(p)
    assert catch_up.job_name == scoring_job.name
    assert catch_up.tags == {**catch_up.tags, **range_tags(f"{DAYS[2]}|DEV-0002", f"{DAYS[3]}|DEV-0002")}
    assert dg.materialize(all_assets, instance=p.instance, resources=p.resources(), selection=scoring_job.selection,
                          tags=catch_up.tags).success
    assert _scored_versions(p, DAYS[2]) == [("DEV-0001", 1, 1), ("DEV-0002", 1, 1)]
    assert isinstance(_tick(p), dg.SkipReason)


def test_a_sliding_window_makes_a_new_version_only_when_its_data_changed(make_pipeline):
    p = make_pipeline({**FLEET, "model": {"training": {"last_days": 1}}})
    p.register("DEV-0001", "DEV-0002")
    assert _run(p, telemetry_job, f"{DAYS[0]}|DEV-0001", f"{DAYS[1]}|DEV-0002").success
    assert _run(p, training_job, "DEV-0001", "DEV-0002").success
    assert _run(p, training_job, "DEV-0001", "DEV-0002").success  # same window, same data: same version
    assert _versions(p) == [(1, DAYS[1])]
    assert _run(p, telemetry_job, f"{DAYS[2]}|DEV-0001", f"{DAYS[2]}|DEV-0002").success
    # the weekly retraining as of day 2 (run again after day 3 arrived) fits the same window: no new version
    request = _weekly_retraining(datetime(2026, 1, 3, 3, 0, tzinfo=timezone.utc))
    assert request.run_config == {"ops": {"model": {"config": {"as_of": DAYS[1]}}}}
    assert _run(p, training_job, "DEV-0001", "DEV-0002", run_config=request.run_config).success
    assert _versions(p) == [(1, DAYS[1])]
    assert _run(p, training_job, "DEV-0001", "DEV-0002").success  # slides to day 3: a new version
    assert _versions(p) == [(1, DAYS[1]), (2, DAYS[2])]
    assert _run(p, scoring_job, f"{DAYS[2]}|DEV-0001", f"{DAYS[2]}|DEV-0002").success
    assert _scored_versions(p, DAYS[2]) == [("DEV-0001", 2, 2), ("DEV-0002", 2, 2)]
    # a window too short to refit (here: a minimum it cannot reach) keeps the version, it never fails the fleet
    write_config(p.config_path, {**FLEET, "model": {"training": {"last_days": 1}, "min_training_rows": 5_000}})
    kept = _run(p, training_job, "DEV-0001", "DEV-0002")
    assert kept.success and _versions(p) == [(1, DAYS[1]), (2, DAYS[2])]
    [model] = [m.materialization.metadata for m in kept.get_asset_materialization_events()][:1]
    assert "| DEV-0001 | too_short |" in model["not_trained"].value


@pytest.fixture
def two_versions(make_pipeline) -> Pipeline:
    """DEV-0001 and DEV-0002 with versions 1 (day 1) and 2 (day 2) of a one-day sliding window."""
    p = make_pipeline({**FLEET, "model": {"training": {"last_days": 1}}})
    p.register("DEV-0001", "DEV-0002")
    assert _run(p, telemetry_job, f"{DAYS[0]}|DEV-0001", f"{DAYS[1]}|DEV-0002").success
    assert _run(p, training_job, "DEV-0001", "DEV-0002", {"ops": {"model": {"config": {"as_of": DAYS[0]}}}}).success
    assert _run(p, training_job, "DEV-0001", "DEV-0002").success
    assert _versions(p) == [(1, DAYS[0]), (2, DAYS[1])]
    return p


def test_a_pin_rolls_scoring_back_to_the_pinned_version(two_versions):
    p = two_versions
    write_config(p.config_path, {**FLEET, "model": {"training": {"last_days": 1}, "pins": {"DEV-0001": 1}}})
    assert _run(p, scoring_job, f"{DAYS[1]}|DEV-0001", f"{DAYS[1]}|DEV-0002").success
    assert _scored_versions(p, DAYS[1]) == [("DEV-0001", 1, 1), ("DEV-0002", 2, 2)]
    threshold = p.sql("SELECT threshold FROM itap.model WHERE device_id = 'DEV-0001' AND version = 1").item()
    assert p.sql(f"SELECT DISTINCT threshold FROM itap.scores WHERE device_id = 'DEV-0001' AND day = '{DAYS[1]}'"
                 ).item() == threshold


def test_a_pin_to_a_missing_version_fails_naming_device_and_version(two_versions):
    p = two_versions
    write_config(p.config_path, {**FLEET, "model": {"training": {"last_days": 1}, "pins": {"DEV-00*": 3}}})
    result = _run(p, scoring_job, f"{DAYS[1]}|DEV-0001", f"{DAYS[1]}|DEV-0002")
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "device DEV-0001 is pinned to model version 3 (model.pins 'DEV-00*') but its registry holds version(s) " \
           "[1, 2]" in message and "device DEV-0002" in message


def test_a_daily_run_before_any_model_exists_ingests_the_fleet_and_lists_every_device_as_not_scored(make_pipeline):
    p = make_pipeline(FLEET)
    p.register("DEV-0001", "DEV-0002")
    daily = _run(p, daily_job, f"{DAYS[0]}|DEV-0001", f"{DAYS[0]}|DEV-0002")  # no model table at all yet
    assert daily.success
    [scores] = [m for m in daily.get_asset_materialization_events() if m.asset_key == dg.AssetKey("scores")][:1]
    assert scores.materialization.metadata["devices_without_model"].value == 2
    assert p.sql(f"SELECT count(DISTINCT device_id) FROM itap.features WHERE day = '{DAYS[0]}'").rows() == [(2,)]
