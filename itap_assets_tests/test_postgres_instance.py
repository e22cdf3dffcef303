"""configs/dagster_postgres.yaml on a real PostgreSQL server: runs, event logs and schedules in PostgreSQL, the
connection from the environment. The whole graph on it is itap_assets_tests/test_scale_out.py."""

import shutil

import dagster as dg
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from itap_assets.settings import PROJECT_ROOT
from itap_assets_tests.postgres_server import postgres_server  # noqa: F401 - the fixture


def test_the_instance_keeps_runs_events_and_schedules_in_postgres(postgres_server, tmp_path, monkeypatch):
    for key, value in postgres_server.database("itap_instance").items():
        monkeypatch.setenv(key, value)
    shutil.copy(PROJECT_ROOT / "configs" / "dagster_postgres.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        instance.add_dynamic_partitions("device", ["DEV-0001"])
        result = dg.materialize([dg.asset(lambda: 1, name="one")], instance=instance)
        assert result.success
    with dg.DagsterInstance.get() as again:  # another process would see the same
        assert again.get_dynamic_partitions("device") == ["DEV-0001"]
        assert again.get_run_by_id(result.run_id).is_success
        assert again.get_latest_materialization_event(dg.AssetKey("one")) is not None
