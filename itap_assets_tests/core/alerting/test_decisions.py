"""Which rule explains a flagged point: bursts, dominant families, precedence, fallback, severity, tags and routes."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta

import polars as pl
import pytest

from itap_assets.core.alerting import ALERT_SCHEMA, DEFAULT_FAMILIES, evaluate_alerts, normalise_tag
from itap_assets_tests.core.alerting.builders import (
    DAY,
    TEMP,
    VIB,
    at,
    bands,
    burst,
    config,
    dominant,
    fallback,
    frame,
    point,
    run,
    tag_routes,
)

# --- burst -------------------------------------------------------------------------------------------------------


def test_burst_points_exactly_window_apart_share_a_window():
    # given 3 flagged points at 0, 2.5 and exactly 5 minutes, and a burst rule of 3 within 5 minutes
    cfg = config(burst(n=3, window=5))
    # when evaluated
    alerts = run(cfg, point(0), point(2.5), point(5))
    # then the boundary is inclusive: one burst incident holding all three points
    assert alerts.select("rule_name", "n_events", "start_ts", "end_ts").rows() == [("storm", 3, at(0), at(5))]


def test_burst_point_one_microsecond_outside_the_window_does_not_count():
    # given the third point one microsecond beyond the window
    cfg = config(burst(n=3, window=5), fallback(severity="INFO"))
    # when evaluated
    alerts = run(cfg, point(0), point(2.5), point(at(5, microseconds=1)))
    # then no burst: the points are unexplained and go to the fallback rule
    assert alerts["rule_name"].to_list() == ["unexplained"]
    assert alerts["n_events"].to_list() == [3]


def test_burst_needs_min_anomalies_points():
    # given one point fewer than min_anomalies and no fallback
    alerts = run(config(burst(n=3, window=5)), point(0), point(1))
    # then there is no alert at all
    assert alerts.is_empty()


def test_burst_includes_the_points_before_the_count_is_reached():
    # given 4 points a minute apart and a burst of 3 in 5 minutes
    alerts = run(config(burst(n=3, window=5)), point(0), point(1), point(2), point(3))
    # then the first two points are part of the burst too (not only the points where the count reaches 3)
    assert alerts.select("start_ts", "end_ts", "n_events").rows() == [(at(0), at(3), 4)]


def test_burst_is_counted_per_device():
    # given two points on one device and one on another, all within the window
    alerts = run(config(burst(n=3, window=5)), point(0, "DEV-A"), point(1, "DEV-A"), point(2, "DEV-B"))
    # then no device reaches 3: no burst
    assert alerts.is_empty()


def test_burst_on_one_device_does_not_alert_another():
    # given a burst on DEV-A and two points on DEV-B
    points = [point(m, "DEV-A") for m in (0, 1, 2)] + [point(m, "DEV-B") for m in (0, 1)]
    alerts = run(config(burst(n=3, window=5)), *points)
    # then only DEV-A alerts
    assert alerts["device_id"].to_list() == ["DEV-A"]


def test_sliding_window_chains_overlapping_windows():
    # given points every 4 minutes and a burst of 2 within 5 minutes
    alerts = run(config(burst(n=2, window=5)), *(point(m) for m in (0, 4, 8, 12)))
    # then every point is in some qualifying window and they form one incident
    assert alerts.select("n_events", "start_ts", "end_ts").rows() == [(4, at(0), at(12))]


def test_sliding_window_never_holding_enough_points_gives_no_burst():
    # given points every 4 minutes and a burst of 3 within 5 minutes (a window holds at most 2)
    alerts = run(config(burst(n=3, window=5)), *(point(m) for m in (0, 4, 8, 12)))
    # then there is no burst
    assert alerts.is_empty()


def test_isolated_point_after_a_burst_goes_to_fallback():
    # given a burst and, half an hour later, a lone point
    cfg = config(burst(n=3, window=5), fallback(severity="INFO"))
    alerts = run(cfg, point(0), point(1), point(2), point(32))
    # then the burst and the fallback are separate alerts
    assert alerts.select("rule_name", "n_events").rows() == [("storm", 3), ("unexplained", 1)]


def test_burst_across_midnight_is_one_incident_starting_the_day_before():
    # given points at 23:57 and 23:59 of day D-1 and 00:01 of day D
    cfg = config(burst(n=3, window=5))
    # when evaluated for day D with D-1 as context
    alerts = run(cfg, point(-3), point(-1), point(1), window_start=DAY)
    # then one burst, continuous over midnight, starting on D-1
    assert alerts.select("start_ts", "end_ts", "n_events").rows() == [(at(-3), at(1), 3)]


def test_burst_needing_the_previous_day_would_be_missed_without_context():
    # given only the day-D part of a burst that started at 23:57
    alerts = run(config(burst(n=3, window=5)), point(1))
    # then on its own it is no burst: the context day is what makes bursts continuous
    assert alerts.is_empty()


def test_unflagged_points_do_not_count_towards_a_burst():
    # given two flagged points and one unflagged point within the window
    alerts = run(config(burst(n=3, window=5)), point(0), point(1), point(2, flagged=False))
    # then no burst
    assert alerts.is_empty()


def test_burst_counts_every_point_of_the_incident():
    # given two vibration points and one unexplained point: vibration holds 47 % of the incident, below 50 %
    cfg = config(dominant("vib", "Vibration", priority=10), burst(n=3, window=5))
    alerts = run(cfg, point(0, families=VIB), point(1, families=VIB), point(2))
    # then all three count for the burst, which explains the one incident
    assert alerts.select("rule_name", "start_ts", "n_events").rows() == [("storm", at(0), 3)]


# --- dominant family ---------------------------------------------------------------------------------------------


def test_dominant_family_exactly_at_min_percent_matches():
    cfg = config(dominant("vib", "Vibration", min_percent=50), fallback(severity="INFO"))
    alerts = run(cfg, point(0, families={"Vibration": 50.0, "RPM": 50.0}))
    assert alerts["rule_name"].to_list() == ["vib"]


def test_dominant_family_just_below_min_percent_does_not_match():
    cfg = config(dominant("vib", "Vibration", min_percent=50), fallback(severity="INFO"))
    alerts = run(cfg, point(0, families={"Vibration": 49.99, "RPM": 50.01}))
    assert alerts["rule_name"].to_list() == ["unexplained"]


def test_multi_family_rule_matches_when_every_family_reaches_min_percent():
    # given a rule on Voltage and Current at 30 % each and a point with 35 % and exactly 30 %
    cfg = config(dominant("electrical", ["Voltage", "Current"], min_percent=30), fallback(severity="INFO"))
    alerts = run(cfg, point(0, families={"Voltage": 35.0, "Current": 30.0, "RPM": 35.0}))
    # then it matches; confidence = (65 % - 35 % for the next family) x 1 / (1 + 1) for a single point
    assert alerts.select("rule_name", "confidence").rows() == [("electrical", 0.15)]


def test_multi_family_rule_does_not_match_when_one_family_is_below():
    cfg = config(dominant("electrical", ["Voltage", "Current"], min_percent=30), fallback(severity="INFO"))
    alerts = run(cfg, point(0, families={"Voltage": 60.0, "Current": 29.9, "RPM": 10.1}))
    assert alerts["rule_name"].to_list() == ["unexplained"]


def test_nan_percentage_is_not_dominant_and_is_left_out_of_families():
    # given a point whose Vibration share is NaN
    cfg = config(dominant("vib", "Vibration", min_percent=10), fallback(severity="INFO"))
    alerts = run(cfg, point(0, families={"Vibration": math.nan, "RPM": 40.0}))
    # then Vibration does not count and the families are renormalised over the finite values
    assert alerts["rule_name"].to_list() == ["unexplained"]
    assert json.loads(alerts["families"][0]) == {"RPM": 100.0}


def test_missing_family_counts_as_zero():
    cfg = config(dominant("vib", "Vibration", min_percent=10), fallback(severity="INFO"))
    alerts = run(cfg, point(0, families={"RPM": 100.0}))
    assert alerts["rule_name"].to_list() == ["unexplained"]


def test_zero_percent_is_not_dominant_even_with_a_tiny_threshold():
    cfg = config(dominant("vib", "Vibration", min_percent=0.001), fallback(severity="INFO"))
    alerts = run(cfg, point(0, families={"Vibration": 0.0, "RPM": 100.0}))
    assert alerts["rule_name"].to_list() == ["unexplained"]


def test_point_without_explanation_goes_to_fallback():
    # given a flagged point whose family_pct is null
    cfg = config(dominant("vib", "Vibration"), fallback(severity="INFO"))
    alerts = run(cfg, point(0, families=None))
    # then the fallback explains it, with empty families
    assert alerts.select("rule_name", "families", "top_features").rows() == [("unexplained", "{}", "[]")]


def test_user_added_family_works_end_to_end():
    # given a Pressure family added through the settings
    cfg = config(dominant("pressure", "Pressure"), known_families=(*DEFAULT_FAMILIES, "Pressure"))
    alerts = run(cfg, point(0, families={"Pressure": 80.0, "Temperature": 20.0}))
    # then the rule fires and the family shows in the alert
    assert alerts["rule_name"].to_list() == ["pressure"]
    assert json.loads(alerts["families"][0]) == {"Pressure": 80.0, "Temperature": 20.0}


# --- precedence --------------------------------------------------------------------------------------------------

BOTH = {"Vibration": 50.0, "RPM": 50.0}


def test_priority_beats_severity():
    cfg = config(dominant("a", "Vibration", 30, severity="CRITICAL"),
                 dominant("b", "RPM", 30, severity="INFO", priority=5))
    assert run(cfg, point(0, families=BOTH))["rule_name"].to_list() == ["b"]


def test_severity_beats_rule_order_at_equal_priority():
    cfg = config(dominant("a", "Vibration", 30, severity="WARNING"), dominant("b", "RPM", 30, severity="CRITICAL"))
    assert run(cfg, point(0, families=BOTH))["rule_name"].to_list() == ["b"]


def test_rule_order_breaks_remaining_ties():
    cfg = config(dominant("a", "Vibration", 30), dominant("b", "RPM", 30))
    assert run(cfg, point(0, families=BOTH))["rule_name"].to_list() == ["a"]


def test_higher_priority_burst_beats_dominant_family():
    cfg = config(dominant("vib", "Vibration", severity="CRITICAL"), burst(n=2, window=5, severity="INFO", priority=1))
    alerts = run(cfg, point(0, families=VIB), point(1, families=VIB))
    assert alerts.select("rule_name", "severity").rows() == [("storm", "INFO")]


def test_rule_deriving_severity_ranks_as_the_score_floor():
    # given a score-derived rule listed first and a fixed WARNING rule, and a high score (CRITICAL by bands)
    cfg = config(bands(), dominant("a", "Vibration", 30, severity=None), dominant("b", "RPM", 30, severity="WARNING"))
    alerts = run(cfg, point(0, score=5.0, families=BOTH))
    # then the fixed WARNING rule wins: the derived rule ranks as INFO, not as its per-point band
    assert alerts.select("rule_name", "severity").rows() == [("b", "WARNING")]


def test_precedence_does_not_flicker_with_point_scores():
    # given consecutive points with scores crossing band limits, explained by two score-derived rules
    cfg = config(bands(), dominant("a", "Vibration", 30, severity=None), dominant("b", "RPM", 30, severity=None))
    points = [point(m, score=s, families=BOTH) for m, s in enumerate([1.0, 4.0, 2.0, 5.0])]
    # then one rule explains them all: a single incident
    assert run(cfg, *points).select("rule_name", "n_events", "severity").rows() == [("a", 4, "CRITICAL")]


# --- fallback and score bands ------------------------------------------------------------------------------------


def test_fallback_alert_carries_its_texts_route_and_confidence_that_no_family_dominates():
    cfg = config(dominant("vib", "Vibration"), fallback(severity="INFO", route="triage"))
    alerts = run(cfg, point(0, families=TEMP))
    row = alerts.row(0, named=True)
    # confidence: (1 - the largest share, 80 %) x 1 / (1 + 1)
    assert (row["rule_name"], row["cause"], row["action"], row["route"], row["confidence"]) == (
        "unexplained", "no rule explains it", "review trends", "triage", 0.1
    )


def test_without_fallback_unexplained_incidents_raise_no_alert():
    alerts = run(config(dominant("vib", "Vibration")), point(0, families=TEMP), point(30, families=VIB))
    assert alerts.select("rule_name", "start_ts").rows() == [("vib", at(30))]


def test_disabled_rule_explains_nothing():
    cfg = config(dominant("vib", "Vibration", enabled=False), fallback(severity="INFO"))
    assert run(cfg, point(0, families=VIB))["rule_name"].to_list() == ["unexplained"]


@pytest.mark.parametrize(
    ("score", "severity"), [(3.0, "CRITICAL"), (2.99, "WARNING"), (1.5, "WARNING"), (1.49, "INFO"), (None, "INFO")]
)
def test_fallback_severity_follows_score_bands(score, severity):
    # given bands CRITICAL >= 3 and WARNING >= 1.5 (inclusive) with INFO below
    cfg = config(bands(), fallback())
    # when a single unexplained point has this score / then the band decides
    assert run(cfg, point(0, score=score))["severity"].to_list() == [severity]


def test_incident_severity_uses_the_max_score_of_its_points():
    cfg = config(bands(), fallback())
    alerts = run(cfg, point(0, score=1.0), point(1, score=3.5), point(2, score=1.2))
    assert alerts.select("severity", "max_score", "n_events").rows() == [("CRITICAL", 3.5, 3)]


def test_fixed_severity_ignores_score_bands():
    cfg = config(bands(), dominant("vib", "Vibration", severity="WARNING"))
    assert run(cfg, point(0, score=9.0, families=VIB))["severity"].to_list() == ["WARNING"]


# --- tags and routes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["Bearing-Wear", "bearing wear", " BEARING_wear ", "bearing--wear"])
def test_point_tags_are_normalised_before_routing(raw):
    cfg = config(fallback(severity="INFO"), tag_routes(bearing_wear="maintenance"))
    alerts = run(cfg, point(0, tag=raw))
    assert alerts.select("tag", "route").rows() == [("bearing_wear", "maintenance")]


def test_unknown_tag_goes_to_the_tag_route_default():
    cfg = config(fallback(severity="INFO"), tag_routes(default_route="triage", bearing_wear="maintenance"))
    assert run(cfg, point(0, tag="HIST-42"))[["tag", "route"]].rows() == [("hist_42", "triage")]


def test_rule_tag_is_used_when_the_point_has_none():
    cfg = config(dominant("vib", "Vibration", tag="Bearing Wear"), tag_routes(bearing_wear="maintenance"))
    alerts = run(cfg, point(0, families=VIB))
    assert alerts.select("tag", "route", "cause").rows() == [("bearing_wear", "maintenance", "vib cause")]


def test_point_tag_overrides_the_rule_tag():
    cfg = config(dominant("vib", "Vibration", tag="bearing_wear"),
                 tag_routes(bearing_wear="maintenance", overheating="thermal"))
    alerts = run(cfg, point(0, families=VIB, tag="Overheating"))
    assert alerts.select("tag", "route").rows() == [("overheating", "thermal")]


def test_known_tag_route_beats_the_rule_route():
    cfg = config(dominant("vib", "Vibration", route="vib-team"), tag_routes(bearing_wear="maintenance"))
    assert run(cfg, point(0, families=VIB, tag="bearing_wear"))["route"].to_list() == ["maintenance"]


def test_rule_route_beats_the_tag_default_for_an_unknown_tag():
    cfg = config(dominant("vib", "Vibration", route="vib-team"), tag_routes(default_route="triage"))
    assert run(cfg, point(0, families=VIB, tag="weird"))["route"].to_list() == ["vib-team"]


def test_untagged_alert_without_rule_route_uses_the_default_route():
    cfg = config(dominant("vib", "Vibration"), tag_routes(default_route="triage"))
    assert run(cfg, point(0, families=VIB)).select("tag", "route").rows() == [(None, "ops")]


def test_without_tag_route_rule_tags_are_kept_but_do_not_route():
    cfg = config(fallback(severity="INFO"))
    assert run(cfg, point(0, tag="bearing_wear")).select("tag", "route").rows() == [("bearing_wear", "ops")]


def test_incident_tag_is_the_most_frequent_point_tag():
    cfg = config(fallback(severity="INFO"))
    alerts = run(cfg, point(0, tag="a"), point(1, tag="b"), point(2, tag="B"), point(3))
    assert alerts["tag"].to_list() == ["b"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Bearing-Wear", "bearing_wear"), ("  over  heating ", "over_heating"), ("A_-_B", "a_b"), ("  ", None),
     (None, None)],
)
def test_normalise_tag(raw, expected):
    assert normalise_tag(raw) == expected


# --- output shape ------------------------------------------------------------------------------------------------


def test_empty_input_gives_an_empty_frame_with_the_alert_schema():
    alerts = evaluate_alerts(frame(), config(fallback(severity="INFO")))
    assert alerts.is_empty() and alerts.schema == pl.Schema(ALERT_SCHEMA)


def test_only_unflagged_points_give_an_empty_frame():
    alerts = run(config(fallback(severity="INFO")), point(0, flagged=False), point(1, flagged=False))
    assert alerts.is_empty() and list(alerts.columns) == list(ALERT_SCHEMA)


def test_output_has_exactly_the_documented_columns_and_types():
    alerts = run(config(dominant("vib", "Vibration")), point(0, families=VIB))
    assert alerts.schema == pl.Schema(ALERT_SCHEMA)
    assert alerts["suppressed_by"].to_list() == [None]


def test_families_are_the_mean_attribution_over_the_incident():
    # given two points of one incident with different attributions
    cfg = config(dominant("vib", "Vibration"))
    alerts = run(cfg, point(0, families={"Vibration": 80.0, "RPM": 20.0}),
                 point(1, families={"Vibration": 60.0, "Temperature": 40.0}))
    families = json.loads(alerts["families"][0])
    # then each family is averaged (missing = 0), ordered by share, summing to 100
    assert list(families.items()) == [("Vibration", 70.0), ("Temperature", 20.0), ("RPM", 10.0)]
    assert sum(families.values()) == pytest.approx(100.0)


def test_top_features_are_averaged_over_the_incident_and_limited_to_five():
    cfg = config(fallback(severity="INFO"))
    alerts = run(
        cfg,
        point(0, features=[["a", 50.0], ["b", 30.0], ["c", 20.0]]),
        point(1, features=[["a", 30.0], ["d", 40.0], ["e", 10.0], ["f", 10.0], ["g", 10.0]]),
    )
    assert json.loads(alerts["top_features"][0]) == [["a", 40.0], ["d", 20.0], ["b", 15.0], ["c", 10.0], ["e", 5.0]]


def test_only_required_columns_are_needed():
    # given points without top_family, family_pct, top_features and tag columns
    points = pl.DataFrame({"ts": [at(0)], "device_id": ["DEV-1"], "score": [2.0], "is_anomaly": [True]})
    alerts = evaluate_alerts(points, config(fallback(severity="INFO")))
    assert alerts.select("rule_name", "families", "top_features", "tag").rows() == [("unexplained", "{}", "[]", None)]


def test_explanations_as_text_are_an_error_that_names_the_column():
    points = frame(point(0)).with_columns(pl.col("family_pct").struct.json_encode())
    with pytest.raises(ValueError, match="family_pct must be a struct"):
        evaluate_alerts(points, config(fallback(severity="INFO")))


def test_missing_required_column_is_an_error():
    with pytest.raises(ValueError, match="is_anomaly"):
        points = pl.DataFrame({"ts": [at(0)], "device_id": ["D"], "score": [1.0]})
        evaluate_alerts(points, config(fallback(severity="INFO")))


def test_timezone_aware_timestamps_become_naive_utc():
    berlin = pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Berlin")
    points = frame(point(0)).with_columns(berlin)
    alerts = evaluate_alerts(points, config(fallback(severity="INFO")))
    assert alerts["start_ts"].to_list() == [at(0)] and alerts.schema["start_ts"] == pl.Datetime("us")


def test_a_day_of_ten_second_points_for_many_devices_is_fast_and_gives_incidents():
    # given 20 devices, two days of 10 s points, each with one flagged hour per day
    n = 2 * 8640
    ts = pl.datetime_range(at(-1440), at(1440), interval="10s", closed="left", time_unit="us", eager=True)
    base = pl.DataFrame({"ts": ts}).with_columns(
        minute=((pl.col("ts") - pl.lit(at(-1440))).dt.total_seconds() // 60) % 1440
    )
    points = pl.concat([base.with_columns(device_id=pl.lit(f"DEV-{d:03d}")) for d in range(20)]).with_columns(
        score=pl.lit(2.0),
        is_anomaly=pl.col("minute").is_between(600, 659),
        top_family=pl.lit("Vibration"),
        family_pct=pl.lit(VIB),
        top_features=pl.lit([{"feature": "vib_z", "pct": 60.0}]),
        tag=pl.lit(None, dtype=pl.Utf8),
    ).drop("minute")
    assert points.height == 20 * n
    cfg = config(dominant("vib", "Vibration"), burst(n=30, window=10, severity="INFO"))
    # when evaluated for day D
    started = time.perf_counter()
    alerts = evaluate_alerts(points, cfg, window_start=DAY)
    elapsed = time.perf_counter() - started
    # then each device has one incident for the day (360 events), not 360 alerts, within a second or so
    assert alerts.height == 20
    assert set(alerts["n_events"]) == {360} and set(alerts["rule_name"]) == {"vib"}
    assert alerts["start_ts"].min() == datetime(2026, 1, 2, 10, 0) and elapsed < 5
    assert (alerts["end_ts"] - alerts["start_ts"]).max() == timedelta(minutes=59, seconds=50)
