"""Device-day and fleet summaries against values computed by hand on a small fixture."""

import json
import math
from datetime import date, datetime

import polars as pl
import pytest

from itap_assets.core.summaries import device_day_summaries, fleet_day_summary

D1, D2 = date(2026, 1, 1), date(2026, 1, 2)


def scores_fixture() -> pl.DataFrame:
    # DEV-A, day 1: 4 points, none flagged; day 2: 4 points, 2 flagged (scores 6 and 8), threshold 4.
    rows = [
        (datetime(2026, 1, 1, 0, m), D1, "DEV-A", s, 4.0, False) for m, s in enumerate([1.0, 2.0, 3.0, 2.0])
    ] + [
        (datetime(2026, 1, 2, 0, m), D2, "DEV-A", s, 4.0, s > 4) for m, s in enumerate([1.0, 6.0, 8.0, 1.0])
    ]
    return pl.DataFrame(rows, schema=["ts", "day", "device_id", "score", "threshold", "is_anomaly"], orient="row")


def explanations_fixture() -> pl.DataFrame:
    return pl.DataFrame({
        "ts": [datetime(2026, 1, 2, 0, 1), datetime(2026, 1, 2, 0, 2)],
        "day": [D2, D2],
        "device_id": ["DEV-A", "DEV-A"],
        "family_pct": [{"Vibration": 80.0, "RPM": 20.0, "Voltage": 0.0}, {"Vibration": 60.0, "RPM": 0.0, "Voltage": 40.0}],
        "top_features": [[{"feature": "vib_std", "pct": 50.0}, {"feature": "rpm_mean", "pct": 20.0}],
                         [{"feature": "vib_std", "pct": 30.0}]],
    })


def alerts_fixture(*severities: str, day: date = D2, device: str = "DEV-A", suppressed: int = 0) -> pl.DataFrame:
    """Active incidents of the given severities, plus `suppressed` ones that must not count."""
    n = len(severities) + suppressed
    return pl.DataFrame({"day": [day] * n, "device_id": [device] * n,
                         "severity": [*severities, *["CRITICAL"] * suppressed],
                         "suppressed_by": [None] * len(severities) + ["min_events:3"] * suppressed},
                        schema_overrides={"suppressed_by": pl.Utf8, "day": pl.Date, "device_id": pl.Utf8,
                                          "severity": pl.Utf8})


def test_points_without_an_explanation_count_as_zero_share():
    # given a third explained point with no attribution (NULL shares, no top features)
    extra = explanations_fixture().head(1).with_columns(
        pl.lit(datetime(2026, 1, 2, 0, 3)).alias("ts"), pl.lit(None).alias("family_pct"),
        pl.lit([]).alias("top_features"))
    out = device_day_summaries(scores_fixture(), pl.concat([explanations_fixture(), extra], how="vertical_relaxed"),
                               alerts_fixture())
    day2 = out.sort("day").row(1, named=True)
    # then the means are over all three points
    assert json.loads(day2["dominant_families"]) == {"Vibration": 46.67, "Voltage": 13.33, "RPM": 6.67}
    assert json.loads(day2["top_features"]) == [["vib_std", 26.67], ["rpm_mean", 6.67]]


def test_device_day_summary_matches_hand_computed_values():
    out = device_day_summaries(scores_fixture(), explanations_fixture(),
                               alerts_fixture("CRITICAL", suppressed=1)).sort("day")
    day1, day2 = out.row(0, named=True), out.row(1, named=True)
    assert (day1["points"], day1["flagged"], day1["flagged_share"]) == (4, 0, 0.0)
    assert day1["mean_score"] == pytest.approx(2.0) and day1["max_score"] == 3.0
    assert day1["health"] == 100.0 and day1["health_change"] is None
    assert (day2["points"], day2["flagged"], day2["flagged_share"]) == (4, 2, 0.5)
    assert day2["mean_score"] == pytest.approx(4.0) and day2["max_score"] == 8.0
    # health = (100 - 25·(1 - e^-(0.5/0.05)) - 25·(1 - e^-((8/4 - 1)/2))) / (1 + 9 for one CRITICAL incident)
    expected = (100 - 25 * (1 - math.exp(-10)) - 25 * (1 - math.exp(-0.5))) / 10
    assert day2["health"] == pytest.approx(expected, abs=1e-3)
    assert (day2["critical_incidents"], day2["warning_incidents"], day2["info_incidents"]) == (1, 0, 0)
    assert day2["health_change"] == pytest.approx(expected - 100, abs=1e-3)
    # families: mean over the 2 explained points: Vibration 70, RPM 10, Voltage 20
    assert json.loads(day2["dominant_families"]) == {"Vibration": 70.0, "Voltage": 20.0, "RPM": 10.0}
    assert day2["dominant_family"] == "Vibration"
    assert json.loads(day2["top_features"]) == [["vib_std", 40.0], ["rpm_mean", 10.0]]


def test_health_ranks_more_and_worse_incidents_lower_and_never_ties():
    """The demo's old tie: several devices at health 0.0, the one with four critical incidents ranked third."""
    scores = pl.concat([scores_fixture().filter(pl.col("day") == D2).with_columns(pl.lit(d).alias("device_id"))
                        for d in ("FOUR_CRIT", "ONE_WARN", "ONE_CRIT", "CLEAN")])
    alerts = pl.concat([alerts_fixture(*["CRITICAL"] * 4, device="FOUR_CRIT"), alerts_fixture("WARNING", device="ONE_WARN"),
                        alerts_fixture("CRITICAL", device="ONE_CRIT")])
    out = device_day_summaries(scores, explanations_fixture().head(0), alerts).sort("health")
    assert out["device_id"].to_list() == ["FOUR_CRIT", "ONE_CRIT", "ONE_WARN", "CLEAN"]
    assert out["health"].n_unique() == 4
    # incidents rank first: the cleanest day with four critical incidents is below the worst day with one warning
    assert out.filter(pl.col("device_id") == "CLEAN")["health"].item() > 50 > out["health"][2]


def test_fleet_summary_ranks_devices_worst_first_and_counts_causes():
    devices = pl.DataFrame({
        "day": [D2, D2, D2], "device_id": ["A", "B", "C"], "health": [90.0, 20.0, 55.0], "flagged": [0, 9, 3],
        "dominant_family": [None, "Vibration", "Vibration"],
    })
    alerts = pl.DataFrame({
        "day": [D2, D2, D2], "severity": ["CRITICAL", "WARNING", "INFO"], "tag": ["bearing_wear", "bearing_wear", None],
        "suppressed_by": [None, None, "min_events:3"],
    })
    row = fleet_day_summary(devices, alerts).row(0, named=True)
    assert json.loads(row["ranking"]) == [["B", 20.0], ["C", 55.0], ["A", 90.0]]
    assert row["worst_device"] == "B" and row["devices_below_50"] == 1 and row["mean_health"] == 55.0
    assert json.loads(row["dominant_family_counts"]) == {"Vibration": 2}
    assert (row["alerts"], row["critical_alerts"]) == (2, 1)
    assert json.loads(row["alert_cause_counts"]) == {"bearing_wear": 2}
