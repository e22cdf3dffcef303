import json

import dagster as dg

from itap_assets.partitions import range_tags
from itap_assets.resources import ItapConfig, Warehouse
from itap_assets.sensors import device_discovery, plan
from itap_assets_tests.conftest import write_config

D1, D2 = "2026-01-01", "2026-01-02"


def test_plan_registers_new_devices_first_and_requests_their_runs_next_tick():
    sources = {"sim": ("sig-1", {(D1, "A"), (D2, "A"), (D1, "B"), (D2, "B")})}
    cursor, new, runs = plan({}, sources, registered=[], has_model=set())
    assert new == ["A", "B"] and runs == []
    cursor, new, runs = plan(cursor, sources, registered=["A", "B"], has_model=set())
    assert new == [] and runs == [("telemetry_job", f"{D1}|A", f"{D2}|B")]
    cursor, new, runs = plan(cursor, sources, registered=["A", "B"], has_model=set())
    assert new == [] and runs == []


def test_plan_runs_the_whole_pipeline_for_devices_with_a_model():
    sources = {"f": ("s", {(D1, "A"), (D1, "B")})}
    _, _, runs = plan({}, sources, registered=["A", "B"], has_model={"A"})
    assert sorted(runs) == [("daily_job", f"{D1}|A", f"{D1}|A"), ("telemetry_job", f"{D1}|B", f"{D1}|B")]


def test_a_changed_source_is_requested_again():
    cursor, _, _ = plan({}, {"f": ("v1", {(D1, "A")})}, registered=["A"], has_model=set())
    _, _, runs = plan(cursor, {"f": ("v2", {(D1, "A")})}, registered=["A"], has_model=set())
    assert runs == [("telemetry_job", f"{D1}|A", f"{D1}|A")]


def test_sensor_registers_the_simulated_fleet_then_requests_one_run(tmp_path):
    config = write_config(tmp_path / "itap.yaml", {"simulation": {"devices": 3, "days": 2}})
    resources = {"itap_config": ItapConfig(path=str(config)), "warehouse": Warehouse(database=str(tmp_path / "x.duckdb"))}
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            first = device_discovery(context)
        assert first.run_requests == []
        assert first.dynamic_partitions_requests[0].partition_keys == ["DEV-0001", "DEV-0002", "DEV-0003"]
        instance.add_dynamic_partitions("device", list(first.dynamic_partitions_requests[0].partition_keys))
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor) as context:
            with dg.partition_loading_context(dynamic_partitions_store=instance):
                second = device_discovery(context)
        assert len(second.run_requests) == 1
        request = second.run_requests[0]
        assert request.job_name == "telemetry_job"
        assert request.tags == {**request.tags, **range_tags(f"{D1}|DEV-0001", f"{D2}|DEV-0003")}
        assert json.loads(second.cursor)["pending"] == []


def test_a_new_file_registers_its_device_and_a_late_file_requests_only_its_days(tmp_path):
    import os
    import shutil

    import yaml

    from itap_assets.settings import PROJECT_ROOT

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    shutil.copy(PROJECT_ROOT / "configs/examples/rigs/rig_A1.csv", incoming / "rig_A1.csv")
    config = yaml.safe_load((PROJECT_ROOT / "configs/examples/files.yaml").read_text())
    config["ingestion"]["path"] = str(incoming / "*.csv")
    config["ingestion"]["settle_seconds"] = 0  # the files are written just before the ticks
    path = write_config(tmp_path / "files.yaml", config)
    resources = {"itap_config": ItapConfig(path=str(path)), "warehouse": Warehouse(database=str(tmp_path / "x.duckdb"))}

    def tick(instance, cursor):
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
            with dg.partition_loading_context(dynamic_partitions_store=instance):
                result = device_discovery(context)
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions("device", list(request.partition_keys))
        return result

    with dg.instance_for_test() as instance:
        first = tick(instance, None)
        assert first.dynamic_partitions_requests[0].partition_keys == ["A1"]
        second = tick(instance, first.cursor)
        assert [r.tags for r in second.run_requests] == [range_tags("2026-03-27|A1", "2026-03-30|A1")]
        assert tick(instance, second.cursor).run_requests == []
        # A late file with one old day for a new device: registered, then only that day is requested.
        lines = (PROJECT_ROOT / "configs/examples/rigs/rig_B2.csv").read_text(encoding="utf-8-sig").splitlines()
        (incoming / "rig_C3.csv").write_text("\n".join(lines[:200]) + "\n", encoding="utf-8")
        third = tick(instance, second.cursor)
        assert third.dynamic_partitions_requests[0].partition_keys == ["C3"] and third.run_requests == []
        fourth = tick(instance, third.cursor)
        assert [r.tags for r in fourth.run_requests] == [range_tags("2026-03-27|C3", "2026-03-28|C3")]
        # Rewriting an old file re-requests its days.
        os.utime(incoming / "rig_A1.csv", ns=(1, 1))
        fifth = tick(instance, fourth.cursor)
        assert [r.tags for r in fifth.run_requests] == [range_tags("2026-03-27|A1", "2026-03-30|A1")]


def test_a_late_day_requests_that_day_and_the_later_days_of_its_device_only():
    D3, D4 = "2026-01-03", "2026-01-04"
    cursor, _, _ = plan({}, {"a1": ("s", {(D1, "A")}), "b1": ("s", {(D1, "B")}), "a3": ("s", {(D3, "A"), (D4, "A")}),
                             "b3": ("s", {(D3, "B")})}, registered=["A", "B"], has_model={"A", "B"})
    sources = {"a1": ("s", {(D1, "A")}), "b1": ("s", {(D1, "B")}), "a3": ("s", {(D3, "A"), (D4, "A")}),
               "b3": ("s", {(D3, "B")}), "a2": ("late", {(D2, "A")})}
    _, _, runs = plan(cursor, sources, registered=["A", "B"], has_model={"A", "B"})
    assert runs == [("daily_job", f"{D2}|A", f"{D4}|A")]  # day 2 and the days after it that read it; B untouched


def test_the_sensor_parses_only_new_or_changed_files(tmp_path, monkeypatch):
    import itap_assets.sensors as sensors
    from itap_assets.sensors import source_partitions
    from itap_assets.settings import load_settings

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name in ("a", "b"):
        (incoming / f"{name}.csv").write_text(f"ts,device,v\n2026-01-01T00:00:00Z,{name.upper()},1\n")
    config = write_config(tmp_path / "itap.yaml", {"source": "files", "ingestion": {
        "path": str(incoming / "*.csv"), "settle_seconds": 0,
        "device_column": "device", "columns": {"v": "temp_c"}, "families": {"temp_c": "Temperature"}}})
    settings = load_settings(config)
    parsed = []
    real_read = sensors.read_file
    monkeypatch.setattr(sensors, "read_file", lambda path, *a, **k: parsed.append(path.name) or real_read(path, *a, **k))
    first = source_partitions(settings)
    assert sorted(parsed) == ["a.csv", "b.csv"]
    known = {name: [sig, sorted(pairs)] for name, (sig, pairs) in first.items()}
    parsed.clear()
    (incoming / "b.csv").write_text("ts,device,v\n2026-01-02T00:00:00Z,B,1\n")
    again = source_partitions(settings, known)
    assert parsed == ["b.csv"]  # a.csv's fingerprint is the cursor's: its partitions come from the cursor
    assert again[str(incoming / "a.csv")][1] == {(D1, "A")} and again[str(incoming / "b.csv")][1] == {(D2, "B")}
