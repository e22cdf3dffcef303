import pytest

from itap_assets.assets.ingest import raw_telemetry
from itap_assets.core.simulator import SimulationError


def test_one_run_over_5_days_and_3_devices_writes_exactly_those_15_partitions(make_pipeline):
    p = make_pipeline()
    p.register("DEV-0001", "DEV-0002", "DEV-0003")
    result = p.materialize([raw_telemetry], first="2026-01-01|DEV-0001", last="2026-01-05|DEV-0003")
    assert result.success
    counts = p.sql("SELECT day, device_id, count(*) AS n FROM raw_telemetry GROUP BY ALL ORDER BY ALL")
    assert counts.height == 15
    assert counts["n"].to_list() == [1440] * 15
    assert p.sql("SELECT typeof(day) AS t FROM raw_telemetry LIMIT 1")["t"][0] == "DATE"


def test_rematerializing_a_partition_replaces_its_rows(make_pipeline):
    p = make_pipeline()
    p.register("DEV-0001", "DEV-0002")
    p.materialize([raw_telemetry], first="2026-01-01|DEV-0001", last="2026-01-02|DEV-0002")
    before = p.sql("SELECT * FROM raw_telemetry ORDER BY device_id, ts")
    p.materialize([raw_telemetry], first="2026-01-02|DEV-0001")
    p.materialize([raw_telemetry], first="2026-01-02|DEV-0001")
    after = p.sql("SELECT * FROM raw_telemetry ORDER BY device_id, ts")
    assert after.equals(before)


def test_materialization_metadata_reports_rows_span_and_missing_rate(make_pipeline):
    p = make_pipeline()
    p.register("DEV-0001")
    result = p.materialize([raw_telemetry], first="2026-01-01|DEV-0001")
    meta = result.asset_materializations_for_node("raw_telemetry")[0].metadata
    assert meta["rows"].value == 1440
    assert meta["first_ts"].value.startswith("2026-01-01 00:00:00")
    assert set(meta["missing_rate"].value) == {"temp_c", "vibration_g", "voltage_v", "current_a", "rpm"}


def test_a_device_the_simulator_does_not_know_is_a_clear_error(make_pipeline):
    p = make_pipeline()
    p.register("DEV-0042")
    with pytest.raises(SimulationError, match="DEV-0042"):
        p.materialize([raw_telemetry], first="2026-01-01|DEV-0042")


def test_a_day_outside_the_simulation_is_a_clear_error(make_pipeline):
    p = make_pipeline()
    p.register("DEV-0001")
    with pytest.raises(SimulationError, match="2026-01-09.*outside the simulated period"):
        p.materialize([raw_telemetry], first="2026-01-09|DEV-0001")


def test_an_unregistered_device_partition_is_refused(make_pipeline):
    p = make_pipeline()
    with pytest.raises(Exception, match="DEV-0001"):
        p.materialize([raw_telemetry], first="2026-01-01|DEV-0001")


def files_config(tmp_path, glob: str) -> dict:
    """The documented example config (configs/examples/files.yaml), reading `glob` instead."""
    import yaml

    from itap_assets.settings import PROJECT_ROOT

    config = yaml.safe_load((PROJECT_ROOT / "configs/examples/files.yaml").read_text())
    config["ingestion"]["path"] = glob
    return config


def test_files_source_materializes_exactly_the_partitions_with_data(make_pipeline, tmp_path):
    from itap_assets.core.ingest import available_partitions
    from itap_assets.settings import PROJECT_ROOT
    from itap_assets_tests.conftest import run_graph

    p = make_pipeline(files_config(tmp_path, str(PROJECT_ROOT / "configs/examples/rigs/*.csv")))
    pairs = list(available_partitions(p.settings.ingestion, PROJECT_ROOT).iter_rows())
    results = run_graph(p, pairs, until="telemetry_job")
    assert all(r.success for r in results)
    stored = p.sql("SELECT DISTINCT day, device_id FROM raw_telemetry ORDER BY ALL").rows()
    assert stored == sorted(pairs)
    assert {d for _, d in pairs} == {"A1", "B2"}
    q = p.table("quarantine")
    assert q["reason"].to_list() == ["bad_type"] and "Sensorfehler" in q["detail"][0]
    assert p.table("validated").height + q.height == p.table("raw_telemetry").height
    assert set(p.table("features").columns) >= {"temp_c__mean_mid", "current_a__slope_long"}  # windows: auto
    assert not any(c.startswith("rpm") for c in p.table("features").columns)


def test_reingesting_the_same_file_is_idempotent(make_pipeline, tmp_path):
    from itap_assets.settings import PROJECT_ROOT

    p = make_pipeline(files_config(tmp_path, str(PROJECT_ROOT / "configs/examples/rigs/rig_A1.csv")))
    p.register("A1")
    key = "2026-03-29|A1"
    p.materialize([raw_telemetry], first=key)
    before = p.sql("SELECT * FROM raw_telemetry ORDER BY ts")
    p.materialize([raw_telemetry], first=key)
    assert p.sql("SELECT * FROM raw_telemetry ORDER BY ts").equals(before)
    assert before.height > 1000
