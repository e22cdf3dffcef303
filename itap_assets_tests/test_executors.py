"""Executors from `execution:` and the plan that runs blocks of devices side by side (itap_assets.parallel_runs).
The whole graph on each executor is itap_assets_tests/test_scale_out.py."""

import os
from datetime import date

import pytest
from dagster._core.definitions.executor_definition import ExecutorDefinition

from itap_assets.core.parallel import MAX_THREADS_ENV, available_cpus, default_threads
from itap_assets.core.partition_ranges import device_chunks
from itap_assets.dask_execution import FixedDaskExecutor
from itap_assets.definitions import executor_of
from itap_assets.parallel_runs import concurrent_runs, cores_shared_by, parallel_plan
from itap_assets.settings import ExecutionSettings, Settings


def configured(executor: ExecutorDefinition) -> dict:
    return executor.apply_config_mapping({}).value["config"]


def test_in_process_is_the_default_and_runs_one_run_at_a_time():
    assert executor_of(ExecutionSettings()).name == "in_process"
    assert concurrent_runs(Settings()) == 1


def test_multiprocess_runs_at_most_processes_steps():
    executor = executor_of(ExecutionSettings(executor="multiprocess", processes=3))
    assert executor.name == "multiprocess"
    assert configured(executor)["max_concurrent"] == 3
    assert concurrent_runs(Settings(execution={"executor": "multiprocess", "processes": 3})) == 3


def test_run_processes_side_by_side_share_the_cores_and_the_parent_keeps_its_own(monkeypatch):
    """Each run process sized for the whole machine oversubscribed it: two on two cores ran steps a third slower."""
    monkeypatch.delenv(MAX_THREADS_ENV, raising=False)
    monkeypatch.setenv("POLARS_MAX_THREADS", "7")
    alone = default_threads()
    with cores_shared_by(available_cpus()):  # one process per core: one thread each
        assert os.environ["POLARS_MAX_THREADS"] == "1" and os.environ[MAX_THREADS_ENV] == "1"
        assert default_threads() == 1
    assert os.environ["POLARS_MAX_THREADS"] == "7" and MAX_THREADS_ENV not in os.environ
    assert default_threads() == alone


@pytest.mark.parametrize("address, kind, options", [
    (None, "local", {"n_workers": 2, "dashboard_address": None}),
    ("tcp://10.0.0.5:8786", "existing", {"address": "tcp://10.0.0.5:8786"}),
])
def test_dask_uses_a_local_cluster_of_processes_workers_or_the_scheduler_named(address, kind, options):
    executor = executor_of(ExecutionSettings(executor="dask", processes=2, dask_address=address))
    assert executor.name == "dask"
    built = executor.executor_creation_fn(None)
    assert isinstance(built, FixedDaskExecutor)
    assert (built.cluster_type, built.cluster_configuration) == (kind, options)
    if kind == "local":
        assert built.build_dict("job")["threads_per_worker"] == 1  # Dagster steps are not thread-safe


def test_a_bad_executor_setting_names_the_field():
    with pytest.raises(ValueError, match="executor"):
        ExecutionSettings(executor="celery")
    with pytest.raises(ValueError, match="processes"):
        ExecutionSettings(processes=0)


@pytest.mark.parametrize("n, blocks", [(5, 2), (2, 4), (4, 1), (7, 3)])
def test_device_chunks_are_contiguous_near_equal_and_cover_every_device(n, blocks):
    devices = [f"DEV-{i:04d}" for i in range(n)]
    chunks = device_chunks(devices, blocks)
    assert [d for chunk in chunks for d in chunk] == devices
    assert len(chunks) == min(n, blocks)
    assert max(map(len, chunks)) - min(map(len, chunks)) <= 1


def test_the_parallel_plan_splits_device_jobs_into_disjoint_blocks_and_runs_the_others_once():
    devices = [f"DEV-{i:04d}" for i in range(1, 6)]
    pairs = [(date(2026, 1, d), dev) for d in (1, 2) for dev in devices]
    stages = parallel_plan(pairs, devices, 2)
    assert [stage[0][0].name for stage in stages] == ["telemetry_job", "training_job", "scoring_job",
                                                      "notification_job", "fleet_job", "evaluation_job"]
    by_job = {stage[0][0].name: [tags for _, tags in stage] for stage in stages}
    start, end = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
    assert [(t[start], t[end]) for t in by_job["telemetry_job"]] == [
        ("2026-01-01|DEV-0001", "2026-01-02|DEV-0003"), ("2026-01-01|DEV-0004", "2026-01-02|DEV-0005")]
    assert [(t[start], t[end]) for t in by_job["training_job"]] == [("DEV-0001", "DEV-0003"),
                                                                    ("DEV-0004", "DEV-0005")]
    assert [(t[start], t[end]) for t in by_job["fleet_job"]] == [("2026-01-01", "2026-01-02")]
    assert by_job["evaluation_job"] == [{}]
