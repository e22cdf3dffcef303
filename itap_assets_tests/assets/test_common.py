from datetime import date, datetime, timedelta

import polars as pl

from itap_assets import storage
from itap_assets.assets.common import device_features, own_partitions
from itap_assets.resources import DB_SCHEMA, Warehouse

DAYS = [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)]


def keys(days: list[date]) -> pl.DataFrame:
    return storage.partition_frame(days, ["DEV-0001"] * len(days))


def stored_features(path) -> None:
    """Three days of one device, written newest first (stored order is not time order)."""
    rows = pl.DataFrame({
        "ts": [datetime.combine(d, datetime.min.time()) + timedelta(hours=h) for d in reversed(DAYS) for h in (2, 1)],
        "day": [d for d in reversed(DAYS) for _ in (2, 1)],
        "device_id": ["DEV-0001"] * 6,
        "x": [float(i) for i in range(6)],
    })
    storage.replace_partitions(path, DB_SCHEMA, "features", rows, keys(DAYS))


def test_device_features_reads_the_keys_days_in_time_order(tmp_path):
    stored_features(tmp_path / "t.duckdb")
    with Warehouse(database=str(tmp_path / "t.duckdb")).session() as session:
        both_ends = device_features(session, keys([DAYS[0], DAYS[2]]), ["x"])
        first_two = device_features(session, keys(DAYS[:2]))
    assert both_ends["day"].unique(maintain_order=True).to_list() == [DAYS[0], DAYS[2]]  # the day between is not read
    assert both_ends.columns == ["ts", "day", "device_id", "x"]
    assert first_two["day"].unique(maintain_order=True).to_list() == DAYS[:2]
    assert first_two["ts"].is_sorted() and both_ends["ts"].is_sorted()


def test_own_partitions_drops_the_context_day_and_keeps_a_frame_with_nothing_to_drop():
    rows = pl.DataFrame({"day": DAYS, "device_id": ["DEV-0001"] * 3, "x": [1.0, 2.0, 3.0]})
    run = keys(DAYS[1:])
    assert own_partitions(rows, run)["x"].to_list() == [2.0, 3.0]  # day D-1 came as history only
    mine = rows.filter(pl.col("day") > DAYS[0])
    assert own_partitions(mine, run) is mine
