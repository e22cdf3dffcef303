"""Which runs count as dead, and what the sensors clean: runs put into a real (temporary) Dagster instance."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import EngineEventData  # what the executor's "Executing steps in process" event carries

from itap_assets.partitions import range_tags
from itap_assets.processes import current_process, gone_since, is_gone
from itap_assets.resources import DUCKDB_POOL, ItapConfig, Warehouse
from itap_assets.definitions import defs
from itap_assets.run_recovery import HOST_TAG, PID_TAG, START_TAG, dead_run_cleanup, launch_tags, recover_dead_runs
from itap_assets.sensors import alert_delivery, device_discovery
from itap_assets.settings import PROJECT_ROOT
from itap_assets_tests.conftest import write_config


@dg.op
def step():
    """A stand-in for one step of an ITAP job."""


@dg.job
def some_job():
    step()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots(DUCKDB_POOL, 1)
        yield instance


def started_run(instance, tags=None, *, holds_slot=True) -> dg.DagsterRun:
    run = instance.create_run_for_job(some_job, status=dg.DagsterRunStatus.STARTED, tags=tags or {})
    if holds_slot:
        assert instance.event_log_storage.claim_concurrency_slot(DUCKDB_POOL, run.run_id, "step").is_claimed
    return run


def slot_runs(instance) -> list[str]:
    return [s.run_id for s in instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).claimed_slots]


def status(instance, run) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run.run_id).status


def test_a_run_whose_launching_process_is_gone_is_failed_naming_the_pid_and_its_slot_freed(instance):
    pid = dead_pid()
    run = started_run(instance, {**launch_tags(), PID_TAG: str(pid)})
    cleaned = recover_dead_runs(instance)
    assert [(c.run_id, c.dead_pid) for c in cleaned] == [(run.run_id, pid)]
    assert cleaned[0].note() == (f"cleaned up run {run.run_id} (some_job, dead pid {pid}): marked failed, "
                                 "pool slots freed")
    assert status(instance, run) == dg.DagsterRunStatus.FAILURE
    assert any(f"pid {pid} on" in e.message and "is gone" in e.message for e in instance.all_logs(run.run_id))
    assert slot_runs(instance) == []
    assert recover_dead_runs(instance) == []


def test_a_reused_pid_is_dead_a_live_process_and_another_hosts_runs_are_left_alone(instance):
    me = current_process()
    reused = started_run(instance, {**launch_tags(), START_TAG: str(me.start_ticks - 1)})
    alive = started_run(instance, launch_tags(), holds_slot=False)
    elsewhere = started_run(instance, {**launch_tags(), HOST_TAG: "another-host", PID_TAG: str(dead_pid())},
                            holds_slot=False)
    assert [c.run_id for c in recover_dead_runs(instance)] == [reused.run_id]
    assert status(instance, alive) == status(instance, elsewhere) == dg.DagsterRunStatus.STARTED
    assert is_gone(me) is False


def test_a_daemon_launched_run_is_judged_by_its_run_workers_pid(instance):
    """No ITAP tags: the pid comes from the executor's engine event, as in a run launched by the daemon or UI."""
    dead, alive = started_run(instance), started_run(instance, holds_slot=False)
    pid = dead_pid()
    for run, worker in ((dead, pid), (alive, os.getpid())):
        instance.report_engine_event(f"Executing steps in process (pid: {worker})", run,
                                     EngineEventData.in_process(worker))
    assert [(c.run_id, c.dead_pid) for c in recover_dead_runs(instance)] == [(dead.run_id, pid)]
    assert status(instance, alive) == dg.DagsterRunStatus.STARTED
    assert gone_since(os.getpid(), running_at=0.0)  # this process started after 1970: not the one running then


def test_slots_left_claimed_by_a_finished_run_are_freed(instance):
    run = started_run(instance)
    instance.report_run_canceled(run)  # as the UI's Terminate does for a run whose worker is gone
    assert slot_runs(instance) == [run.run_id]
    assert [(c.run_id, c.dead_pid) for c in recover_dead_runs(instance)] == [(run.run_id, None)]
    assert slot_runs(instance) == []


def test_every_sensor_cleans_up_dead_runs_and_the_cleanup_sensor_is_on_by_default(instance, tmp_path):
    config = write_config(tmp_path / "itap.yaml", {"simulation": {"devices": 1, "days": 1}})
    resources = {"itap_config": ItapConfig(path=str(config)),
                 "warehouse": Warehouse(database=str(tmp_path / "x.duckdb"))}
    assert dead_run_cleanup in defs.sensors and dead_run_cleanup.default_status == dg.DefaultSensorStatus.RUNNING
    for sensor in (device_discovery, alert_delivery, dead_run_cleanup):
        run = started_run(instance, {**launch_tags(), PID_TAG: str(dead_pid())})
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            sensor(context)
        assert status(instance, run) == dg.DagsterRunStatus.FAILURE
        assert slot_runs(instance) == []


def test_the_projects_dagster_yaml_turns_on_run_monitoring(tmp_path):
    shutil.copy(PROJECT_ROOT / "configs" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert "MONITORING" in instance.get_required_daemon_types()
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30


def test_the_dagster_daemon_cleans_a_dead_run_with_no_sensor_turned_on(tmp_path):
    """`dagster-daemon run` (what `make ui` starts beside the webserver) against the project's dagster.yaml."""
    shutil.copy(PROJECT_ROOT / "configs" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.event_log_storage.initialize_concurrency_limit_to_default(DUCKDB_POOL)
        run = started_run(instance, {**launch_tags(), PID_TAG: str(dead_pid())})
        daemon = subprocess.Popen([Path(sys.executable).with_name("dagster-daemon"), "run", "-w", "workspace.yaml"],
                                  cwd=PROJECT_ROOT, env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while status(instance, run) != dg.DagsterRunStatus.FAILURE and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=10)
        assert status(instance, run) == dg.DagsterRunStatus.FAILURE
        assert slot_runs(instance) == []


def test_a_run_marked_failed_for_a_dead_process_is_requested_again_once(instance):
    tags = {**launch_tags(), PID_TAG: str(dead_pid()), **range_tags("2026-01-01|DEV-0001", "2026-01-02|DEV-0001")}
    run = instance.create_run_for_job(dg.GraphDefinition(name="telemetry_job", node_defs=[step]).to_job(),
                                      status=dg.DagsterRunStatus.STARTED, tags=tags)
    assert [c.run_id for c in recover_dead_runs(instance)] == [run.run_id]
    with dg.build_sensor_context(instance=instance) as context:
        first = dead_run_cleanup(context)
    [request] = first.run_requests
    assert request.run_key == f"rerun-{run.run_id}" and request.job_name == run.job_name
    assert request.tags == range_tags("2026-01-01|DEV-0001", "2026-01-02|DEV-0001")  # not the dead launcher's tags
    with dg.build_sensor_context(instance=instance, cursor=first.cursor) as context:
        assert dead_run_cleanup(context).run_requests == []  # once: the next tick asks nothing
