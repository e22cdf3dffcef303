"""Device keys in the Dagster instance that are not valid ITAP ids (issue 19). Dagster accepts any text as a
dynamic partition key, so one added by hand through the UI or the API (`../x`, '', 'a b', 200 characters, 'a|b')
can sit between the fleet's devices. Every fleet-wide run reports it (a warning naming the key and the id rule)
and leaves it out; it is never fatal to the other devices. The keys are registered in a real Dagster instance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from itap_assets import demo
from itap_assets.definitions import all_assets
from itap_assets.jobs import JOBS, PARTITIONING, scoring_job, telemetry_job, training_job
from itap_assets.partitions import day_device_partitions, device_partitions, range_tags
from itap_assets.resources import ItapConfig, Warehouse
from itap_assets.schedules import daily_schedule, weekly_retraining_schedule
from itap_assets.sensors import device_discovery
from itap_assets_tests.conftest import Pipeline, write_config

BAD = ["../x", "", "a b", "x" * 200, "a|b"]
GOOD = ["DEV-0001", "DEV-0002"]
DAYS = ["2026-01-01", "2026-01-02"]
RULE = "not a valid ITAP device id (ids match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$)"


@contextmanager
def instance_with_bad_keys(bad: list[str] = BAD) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance (in a temporary directory) whose device keys hold `bad` between the two good ones."""
    with dg.instance_for_test() as instance:
        order = [GOOD[0], *bad, GOOD[1]]
        instance.add_dynamic_partitions("device", order)
        assert instance.get_dynamic_partitions("device") == order
        yield instance


def devices_in(tags: dict[str, str], instance: dg.DagsterInstance) -> set[str]:
    """The devices Dagster resolves a run's partition range to."""
    start, end = tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]
    partitions = day_device_partitions if "|" in start else device_partitions
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        keys = partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))
    return {k.split("|", 1)[1] if partitions is day_device_partitions else k for k in keys}


def reported(messages: list[str], bad: list[str] = BAD) -> bool:
    return any(RULE in m and all(repr(k) in m for k in bad) for m in messages)


def test_runs_over_the_whole_fleet_skip_the_bad_keys_and_materialize_the_rest(tmp_path):
    """Ingestion as `make demo` and the sensor plan it (ranges around the bad keys); then every job, ingestion
    included, by hand over a range that spans them, as a UI backfill of every partition does. Not 'a|b': a device key holding the
    day × device separator fails Dagster's own key parsing in any run whose range spans it (docs/reliability.md,
    known limits), which is why the schedules and the sensor never span a bad key."""
    config = {"simulation": {"devices": 2, "days": 2, "sample_interval_s": 60, "fault_rate": 3.0, "seed": 3}}
    spannable = [k for k in BAD if "|" not in k]
    pairs = [(date.fromisoformat(d), dev) for d in DAYS for dev in GOOD]
    spanning = {"day_device": range_tags(f"{DAYS[0]}|{GOOD[0]}", f"{DAYS[-1]}|{GOOD[-1]}"),
                "device": range_tags(GOOD[0], GOOD[-1]), "day": range_tags(DAYS[0], DAYS[-1]), "none": {}}
    with instance_with_bad_keys(spannable) as instance:
        p = Pipeline(write_config(tmp_path / "itap.yaml", config), tmp_path / "itap.duckdb", instance)
        ingestion = [tags for job, tags in demo.run_plan(pairs, instance.get_dynamic_partitions("device"))
                     if job is telemetry_job]
        assert [devices_in(tags, instance) for tags in ingestion] == [{"DEV-0001"}, {"DEV-0002"}]
        runs = [(job, spanning[job.metadata[PARTITIONING]]) for job in JOBS]
        for job, tags in runs:
            result = dg.materialize(all_assets, instance=instance, resources=p.resources(), selection=job.selection,
                                    tags=tags)
            assert result.success, job.name
            if job in (training_job, scoring_job):
                assert reported([e.user_message for e in instance.all_logs(result.run_id)], spannable), job.name
    for table in ("raw_telemetry", "validated", "features", "model", "scores", "alerts", "device_summaries"):
        assert sorted(p.sql(f"SELECT DISTINCT device_id FROM {table}")["device_id"]) == GOOD, table
    assert p.sql("SELECT count(*) AS n FROM scores")["n"][0] == len(GOOD) * len(DAYS) * 1440


@pytest.mark.parametrize("schedule", [daily_schedule, weekly_retraining_schedule], ids=["daily", "retraining"])
def test_schedules_request_runs_around_the_bad_keys(schedule, caplog):
    at = datetime(2026, 1, 3, 1, 0, tzinfo=timezone.utc)
    with instance_with_bad_keys() as instance:
        # Entered and exited: the context enters the instance, and one left entered poisons later materializations.
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=at) as context:
            context.log.addHandler(caplog.handler)  # the instigation logger does not propagate to the root logger
            requests = schedule(context)
        assert [devices_in(r.tags, instance) for r in requests] == [{"DEV-0001"}, {"DEV-0002"}]
    assert len({r.run_key for r in requests}) == 2
    assert reported([r.getMessage() for r in caplog.records])


def test_device_discovery_plans_runs_around_the_bad_keys(tmp_path, caplog):
    config = write_config(tmp_path / "itap.yaml", {"simulation": {"devices": 2, "days": 2}})
    resources = {"itap_config": ItapConfig(path=str(config)), "warehouse": Warehouse(database=str(tmp_path / "x.db"))}
    with instance_with_bad_keys() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            context.log.addHandler(caplog.handler)
            with dg.partition_loading_context(dynamic_partitions_store=instance):
                result = device_discovery(context)
        assert result.dynamic_partitions_requests == []  # the simulated devices are registered already
        assert [devices_in(r.tags, instance) for r in result.run_requests] == [{"DEV-0001"}, {"DEV-0002"}]
    assert reported([r.getMessage() for r in caplog.records])


def test_make_demo_plans_runs_around_the_bad_keys_and_warns(monkeypatch, capsys):
    """`make demo`'s planning, with its runs recorded instead of executed."""
    by_name = {job.name: job for job in JOBS}
    launched = []
    monkeypatch.setattr(demo, "execute", lambda _, job, tags: launched.append((by_name[job], tags))
                        or SimpleNamespace(success=True))
    with instance_with_bad_keys() as instance:
        demo.run_pipeline(instance, [(date.fromisoformat(d), dev) for d in DAYS for dev in GOOD])
        spans = [devices_in(tags, instance) for job, tags in launched
                 if job.metadata[PARTITIONING] in ("day_device", "device")]
    assert spans == [{"DEV-0001"}, {"DEV-0002"}] * 3  # telemetry, training and scoring: two runs each
    assert reported([capsys.readouterr().err])
