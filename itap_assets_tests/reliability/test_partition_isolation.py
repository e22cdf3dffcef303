"""Partition-level failure isolation (issue 20): a day whose data fails validation is excluded and reported; every
other day of the same single-run backfill gets features, scores and alerts.

The series is what a one-sensor logger writes: a CSV with a sample every 5 minutes over six days. On the fourth day
the logger was off until 10:00 and, when it came back, replayed its first hour with other values (12 timestamps
twice). Under the default duplicates policy (quarantine_both) those 12 samples are lost: 12 of 180 rows (6.7 %)
> validation.max_quarantine_share (5 %). (A full day's repeated hour is 12 of 300 rows, 4 %, within the limit: the
conflicting versions of a timestamp count once.) The sixth day holds a two-hour temperature fault.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from itap_assets.definitions import all_assets
from itap_assets.run_report import run_notes
from itap_assets_tests.conftest import run_graph, write_config

DEVICE = "L7"
DAYS = [date(2026, 3, 2) + timedelta(days=i) for i in range(6)]
AFFECTED = DAYS[3]
FAULT_DAY = DAYS[5]
REPLAYED = [datetime(2026, 3, 5, 10, 0) + timedelta(minutes=5 * i) for i in range(12)]


def logger_lines() -> list[str]:
    """The file's data lines, in the order the logger wrote them."""
    rng = np.random.default_rng(20)
    lines = []
    for day in DAYS:
        start = datetime.combine(day, datetime.min.time())
        for i in range(288):
            ts = start + timedelta(minutes=5 * i)
            if day == AFFECTED and ts.hour < 10:
                continue  # the logger was off
            value = 60 + 5 * np.sin(2 * np.pi * i / 288) + rng.normal(0, 0.3)
            if day == FAULT_DAY and 14 <= ts.hour < 16:
                value += 25
            lines.append(f"{ts:%Y-%m-%d %H:%M:%S},{value:.2f}")
            if ts == REPLAYED[-1]:  # back at 10:55, the logger sends its first hour again, other values
                lines += [f"{r:%Y-%m-%d %H:%M:%S},{61 + 0.1 * k:.2f}" for k, r in enumerate(REPLAYED)]
    return lines


def config(data: Path, **validation) -> dict:
    return {
        "source": "files",
        "partitions": {"start_date": DAYS[0].isoformat()},
        "ingestion": {"path": str(data / "*.csv"), "timestamp_column": "ts", "columns": {"temp": "temp_c"},
                      "families": {"temp_c": "Temperature"}, "device_from_path": r"logger_(?P<device>[A-Za-z0-9]+)",
                      "settle_seconds": 0},
        "validation": validation,
        "model": {"training": {"first_days": 2}},
    }


def per_day(p, table: str) -> dict[date, int]:
    return dict(p.sql(f"SELECT day, count(*) FROM {table} GROUP BY day").rows())


def test_a_replayed_hour_excludes_its_day_only_and_every_other_day_is_scored_and_alerted(make_pipeline, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / f"logger_{DEVICE}.csv").write_text("ts,temp\n" + "\n".join(logger_lines()) + "\n", encoding="utf-8")
    p = make_pipeline(config(data))
    results = run_graph(p, [(d, DEVICE) for d in DAYS])
    assert all(r.success for r in results)

    status = p.sql("SELECT * FROM partition_status ORDER BY day")
    assert status["status"].to_list() == ["included"] * 3 + ["excluded"] + ["included"] * 2
    row = status.filter(pl.col("day") == AFFECTED).row(0, named=True)
    assert (row["raw_rows"], row["validated_rows"], row["quarantined_rows"], row["rejected_rows"]) == (180, 156, 24, 12)
    assert row["reason"] == ("12 of 180 rows rejected (6.7%) > validation.max_quarantine_share 5.0%: "
                             "duplicate_conflict 24")

    # The check fails as a WARN naming the day and its numbers (it no longer blocks the other days).
    check = next(e for r in results for e in r.get_asset_check_evaluations()
                 if e.check_name == "structure_and_quarantine_share")
    assert not check.passed and check.severity.value == "WARN"
    assert check.description == (f"1 of 6 partition(s) excluded from downstream steps: {AFFECTED}|{DEVICE} "
                                 f"({row['reason']})")
    assert check.metadata["partitions_excluded"].value == 1
    assert f"| {AFFECTED} | {DEVICE} | 12 of 180 rows rejected" in check.metadata["excluded_partitions"].value
    assert run_notes(results[0]) == [f"check validated:structure_and_quarantine_share: {check.description}"]
    features_step = next(m for m in results[0].get_asset_materialization_events()
                         if m.asset_key.to_user_string() == "features").materialization
    assert features_step.metadata["partitions_excluded"].value == 1

    quality = p.sql("SELECT day, status, excluded_reason, quarantined_rows FROM v_data_quality ORDER BY day")
    assert quality.filter(pl.col("status") == "excluded").rows() == [(AFFECTED, "excluded", row["reason"], 24)]

    others = [d for d in DAYS if d != AFFECTED]
    validated = per_day(p, "validated")
    assert validated[AFFECTED] == 156 and per_day(p, "quarantine")[AFFECTED] == 24  # kept for inspection
    assert per_day(p, "features") == {d: validated[d] for d in others}
    assert per_day(p, "scores") == {d: validated[d] for d in others}
    alerts = p.sql("SELECT day, start_ts, end_ts FROM alerts WHERE suppressed_by IS NULL")
    assert AFFECTED not in alerts["day"].to_list()
    assert alerts.filter((pl.col("day") == FAULT_DAY) & (pl.col("start_ts").dt.hour() >= 13)
                         & (pl.col("start_ts").dt.hour() < 16)).height >= 1
    assert per_day(p, "device_summaries").keys() >= set(others)
    assert AFFECTED not in per_day(p, "explanations")

    # The excluded day's validated rows stay the next day's history: a run of that day alone, as a daily run
    # would, gives the features of the backfill.
    after = f"SELECT * FROM features WHERE day = '{DAYS[4]}' ORDER BY ts"
    backfilled = p.sql(after)
    assert all(r.success for r in run_graph(p, [(DAYS[4], DEVICE)], until="telemetry_job"))
    assert p.sql(after).equals(backfilled)

    # A policy that keeps one version of each timestamp loses no sample: a rerun of that day includes it again,
    # with the replayed values (keep_last), and it is scored.
    write_config(p.config_path, config(data, duplicates="keep_last"))
    assert all(r.success for r in run_graph(p, [(AFFECTED, DEVICE)]))
    assert p.sql(f"SELECT status FROM partition_status WHERE day = '{AFFECTED}'").item() == "included"
    replayed = p.sql(f"SELECT temp_c FROM validated WHERE ts BETWEEN '{REPLAYED[0]}' AND '{REPLAYED[-1]}' ORDER BY ts")
    assert replayed["temp_c"].to_list() == [round(61 + 0.1 * k, 2) for k in range(12)]
    assert per_day(p, "features")[AFFECTED] == per_day(p, "scores")[AFFECTED] == 168


def test_a_requested_day_without_rows_is_excluded_as_empty_and_the_others_go_on(make_pipeline, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    first_day = [line for line in logger_lines() if line.startswith(str(DAYS[0]))]
    (data / f"logger_{DEVICE}.csv").write_text("ts,temp\n" + "\n".join(first_day) + "\n", encoding="utf-8")
    p = make_pipeline(config(data))
    p.register(DEVICE)
    result = p.materialize(all_assets, first=f"{DAYS[0]}|{DEVICE}", last=f"{DAYS[1]}|{DEVICE}",
                           selection=["raw_telemetry", "validated", "quarantine", "features"])
    assert result.success
    assert p.sql("SELECT day, status, reason FROM partition_status ORDER BY day").rows() == [
        (DAYS[0], "included", None), (DAYS[1], "excluded", "no rows")]
    assert per_day(p, "features") == {DAYS[0]: 288}
