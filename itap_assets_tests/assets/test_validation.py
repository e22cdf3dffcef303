from datetime import date

import polars as pl

from itap_assets import storage
from itap_assets.assets.ingest import raw_telemetry
from itap_assets.assets.validation import validation
from itap_assets.core.simulator import simulate_fleet
from itap_assets.resources import DB_SCHEMA


def checks(result) -> dict[str, bool]:
    return {ev.check_name: ev.passed for ev in result.get_asset_check_evaluations()}


def test_demo_like_fleet_passes_every_check_and_accounts_for_every_row(make_pipeline):
    p = make_pipeline()
    p.register("DEV-0001", "DEV-0002", "DEV-0003")
    result = p.materialize([raw_telemetry, validation], first="2026-01-01|DEV-0001", last="2026-01-02|DEV-0003")
    assert all(checks(result).values()), checks(result)
    dq = p.sql("SELECT * FROM v_data_quality ORDER BY day, device_id")
    assert dq.height == 6
    raw = p.sql("SELECT day, device_id, count(*) AS n FROM raw_telemetry GROUP BY ALL ORDER BY day, device_id")
    assert dq["rows_in"].to_list() == raw["n"].to_list()
    assert (dq["validated_rows"] + dq["quarantined_rows"] + dq["duplicate_rows"] == dq["rows_in"]).all()


def _write_raw(p, frame: pl.DataFrame) -> None:
    keys = storage.partition_frame(frame["day"].to_list(), frame["device_id"].to_list())
    storage.replace_partitions(p.db_path, DB_SCHEMA, "raw_telemetry", frame, keys)


def test_too_many_bad_rows_fail_the_blocking_check_but_keep_both_tables_written(make_pipeline):
    p = make_pipeline()
    p.register("DEV-0001")
    raw = simulate_fleet(p.settings.simulation, devices=["DEV-0001"], days=[date(2026, 1, 1)])
    broken = raw.with_columns(
        pl.when(pl.int_range(pl.len()) % 10 == 0).then(float("nan")).otherwise(pl.col("temp_c")).alias("temp_c")
    )
    _write_raw(p, broken)
    result = p.materialize([raw_telemetry, validation], first="2026-01-01|DEV-0001",
                           selection=["validated", "quarantine"], raise_on_error=False)
    outcome = checks(result)
    assert outcome["structure_and_quarantine_share"] is False
    assert outcome["range_violations"] is False
    assert outcome["rows_accounted_for"] is True
    evaluation = next(e for e in result.get_asset_check_evaluations()
                      if e.check_name == "structure_and_quarantine_share")
    assert evaluation.blocking
    assert evaluation.metadata["quarantined_by_reason"].value == {"non_finite": 144}
    assert p.table("quarantine").height == 144
    assert p.table("validated").height == 1440 - 144


def test_a_missing_column_is_a_structure_failure_with_every_row_quarantined(make_pipeline):
    p = make_pipeline()
    p.register("DEV-0002")
    raw = simulate_fleet(p.settings.simulation, devices=["DEV-0002"], days=[date(2026, 1, 1)]).drop("rpm")
    _write_raw(p, raw)
    result = p.materialize([raw_telemetry, validation], first="2026-01-01|DEV-0002",
                           selection=["validated", "quarantine"], raise_on_error=False)
    evaluation = next(e for e in result.get_asset_check_evaluations()
                      if e.check_name == "structure_and_quarantine_share")
    assert not evaluation.passed
    assert "missing column 'rpm'" in evaluation.description
    q = p.table("quarantine")
    assert q.height == 1440 and set(q["reason"]) == {"structure"}


def test_an_hourly_day_with_one_conflicting_timestamp_passes_two_fail(make_pipeline):
    """NAB's realAdExchange files (hourly) send 2011-08-24 12:00:01 twice with different values: both versions
    are quarantined, but that is one lost sample of 24 (4 %), not 2 of 25 rows (8 %, which stopped the run)."""
    p = make_pipeline()
    p.register("DEV-0001")
    day = simulate_fleet(p.settings.simulation, devices=["DEV-0001"], days=[date(2026, 1, 1)])
    hourly = day.gather_every(60)  # 24 rows

    def version(row: int) -> pl.DataFrame:
        return hourly.slice(row, 1).with_columns(pl.col("temp_c") + 7.5)

    for extra, passed in (([12], True), ([5, 12], False)):
        _write_raw(p, pl.concat([hourly, *(version(r) for r in extra)]).sort("ts"))
        result = p.materialize([raw_telemetry, validation], first="2026-01-01|DEV-0001",
                               selection=["validated", "quarantine"], raise_on_error=False)
        assert checks(result)["structure_and_quarantine_share"] is passed
        assert checks(result)["rows_accounted_for"] is True
        assert p.table("quarantine")["reason"].to_list() == ["duplicate_conflict"] * 2 * len(extra)
