from datetime import date, datetime, timedelta

import polars as pl

from itap_assets.assets.alerts import rule_points
from itap_assets.core.explain import explain_points

NAMES = ["temp_c__mean__1m", "rpm__mean__1m"]
FAMILIES = {"temp_c__mean__1m": "Temperature", "rpm__mean__1m": "Speed"}


def scores(flags: list[bool]) -> pl.DataFrame:
    t0 = datetime(2024, 1, 1)
    return pl.DataFrame({
        "ts": [t0 + timedelta(seconds=i) for i in range(len(flags))],
        "day": [date(2024, 1, 1)] * len(flags),
        "device_id": ["DEV-0001"] * len(flags),
        "score": [float(i + 1) for i in range(len(flags))],
        "threshold": [2.0] * len(flags),
        "is_anomaly": flags,
    })


def explanations_of(points: pl.DataFrame) -> pl.DataFrame:
    attribution = [[float(i), 1.0] for i in range(points.height)]
    return points.select("ts", "day", "device_id", "score").hstack(explain_points(attribution, NAMES, FAMILIES))


def test_rule_points_pairs_each_flagged_point_with_its_explanation():
    s = scores([False, True, True, False, True])
    flagged = s.filter("is_anomaly")
    aligned = rule_points(s, explanations_of(flagged))
    # the same points whether the explanations come in the flagged points' order or shuffled
    shuffled = rule_points(s, explanations_of(flagged).reverse())
    assert aligned.equals(shuffled)
    assert aligned["score"].to_list() == [1.0, 1.5, 2.5]  # relative to the threshold
    assert aligned["top_family"].to_list() == ["Speed", "Temperature", "Temperature"]


def test_rule_points_keep_flagged_points_without_an_explanation():
    s = scores([True, True])
    points = rule_points(s, explanations_of(s.head(1)))
    assert points.height == 2
    assert points["top_family"].to_list() == ["Speed", None]
