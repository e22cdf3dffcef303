from datetime import date

import polars as pl

from itap_assets.core.frames import distinct, sorted_by

D1, D2 = date(2026, 1, 1), date(2026, 1, 2)


def test_sorted_by_orders_rows_lexicographically_and_keeps_sorted_frames():
    rows = pl.DataFrame({"device_id": ["B", "A", "A", "B"], "day": [D1, D2, D1, D1], "ts": [2, 1, 5, 1]})
    ordered = sorted_by(rows, ["device_id", "day", "ts"])
    assert ordered.rows() == [("A", D1, 5), ("A", D2, 1), ("B", D1, 1), ("B", D1, 2)]
    assert sorted_by(ordered, ["device_id", "day", "ts"]) is ordered


def test_distinct_finds_every_key_whether_rows_come_grouped_or_not():
    grouped = pl.DataFrame({"day": [1, 1, 2, 2, 2], "device": ["A", "A", "A", "B", "B"], "x": range(5)})
    mixed = grouped.select(pl.all().gather([4, 0, 2, 1, 3]))
    with_null = pl.DataFrame({"day": [1, None, None, 1], "device": ["A", "A", "A", "A"]})
    expected = [(1, "A"), (2, "A"), (2, "B")]
    assert sorted(distinct(grouped, ["day", "device"]).rows()) == expected
    assert sorted(distinct(mixed, ["day", "device"]).rows()) == expected
    assert distinct(with_null, ["day", "device"]).height == 2
