"""Incidents, not event spam: one per device and stretch of evidence, cooldown, silences, status, deterministic ids
and the output window."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from itap_assets.core.alerting import DEFAULT_FAMILIES, AlertRulesConfig, AlertRulesError, alert_id, deadband_states, \
    evaluate_alerts, parse_alert_rules
from itap_assets_tests.core.alerting.builders import (
    DAY,
    SOURCE,
    TEMP,
    VIB,
    at,
    burst,
    config,
    dominant,
    fallback,
    frame,
    point,
    run,
)

def vib_cfg(**kw):
    return config(dominant("vib", "Vibration", severity=kw.pop("severity", "WARNING"),
                           **({"cooldown_minutes": kw.pop("rule_cooldown")} if "rule_cooldown" in kw else {})), **kw)


# --- merging and cooldown ----------------------------------------------------------------------------------------


def test_consecutive_points_merge_into_one_incident():
    # given three vibration points a minute apart
    alerts = run(vib_cfg(), point(0, score=2.0, families=VIB), point(1, score=5.0, families=VIB),
                 point(2, score=3.0, families=VIB))
    # then one incident summarises them
    assert alerts.select("start_ts", "end_ts", "n_events", "max_score").rows() == [(at(0), at(2), 3, 5.0)]


def test_gap_exactly_the_merge_gap_still_merges():
    alerts = run(vib_cfg(merge_gap=10), point(0, families=VIB), point(10, families=VIB))
    assert alerts["n_events"].to_list() == [2]


def test_gap_just_over_the_merge_gap_splits():
    alerts = run(vib_cfg(merge_gap=10), point(0, families=VIB), point(at(10, microseconds=1), families=VIB))
    assert alerts.select("start_ts", "n_events").rows() == [(at(0), 1), (at(10, microseconds=1), 1)]


def test_one_device_is_one_incident_whatever_each_point_looks_like():
    """Alertmanager's group_by [device]: interleaved evidence of two families is one incident, decided from all of
    it (vibration holds 47 % of the incident's attribution, temperature 27 %: vibration's fault)."""
    cfg = config(dominant("vib", "Vibration", min_percent=40), dominant("temp", "Temperature", min_percent=40),
                 fallback(severity="INFO"))
    alerts = run(cfg, point(0, families=VIB), point(1, families=TEMP), point(2, families=VIB))
    assert alerts.select("rule_name", "n_events").rows() == [("vib", 3)]


def test_same_rule_on_different_devices_are_separate_incidents():
    alerts = run(vib_cfg(), point(0, "DEV-A", families=VIB), point(1, "DEV-B", families=VIB))
    assert alerts["device_id"].to_list() == ["DEV-A", "DEV-B"]


def test_cooldown_folds_a_recurrence_into_the_open_incident():
    # given merge gap 10 and cooldown 30, and a recurrence 25 minutes after the first point
    alerts = run(vib_cfg(merge_gap=10, cooldown=30), point(0, families=VIB), point(25, families=VIB))
    # then it is folded into the same incident (no second page)
    assert alerts.select("start_ts", "end_ts", "n_events").rows() == [(at(0), at(25), 2)]


def test_recurrence_after_the_cooldown_opens_a_new_incident():
    alerts = run(vib_cfg(merge_gap=10, cooldown=30), point(0, families=VIB), point(31, families=VIB))
    assert alerts["start_ts"].to_list() == [at(0), at(31)]


def test_rule_cooldown_folds_incidents_of_that_rule():
    # given no default cooldown but the rule's own cooldown of 30
    alerts = run(vib_cfg(merge_gap=10, cooldown=0, rule_cooldown=30), point(0, families=VIB), point(25, families=VIB))
    # then the recurrence is folded into the first incident
    assert alerts.select("start_ts", "end_ts", "n_events").rows() == [(at(0), at(25), 2)]


def test_rule_cooldown_does_not_fold_incidents_of_another_rule():
    cfg = config(dominant("vib", "Vibration", cooldown_minutes=30), dominant("temp", "Temperature"))
    alerts = run(cfg, point(0, families=VIB), point(25, families=TEMP))
    assert alerts.select("rule_name", "start_ts").rows() == [("vib", at(0)), ("temp", at(25))]


def test_cooldown_restarts_from_the_extended_end():
    alerts = run(vib_cfg(merge_gap=10, cooldown=30), *(point(m, families=VIB) for m in (0, 25, 50, 75)))
    assert alerts.select("start_ts", "end_ts", "n_events").rows() == [(at(0), at(75), 4)]


def test_duplicate_rows_for_one_device_and_timestamp_count_once():
    alerts = run(vib_cfg(), point(0, families=VIB), point(0, families=VIB), point(1, families=VIB))
    assert alerts["n_events"].to_list() == [2]


# --- one incident: its cause, confidence and status come from all its evidence -----------------------------------


def test_a_burst_with_a_dominant_family_is_that_familys_fault():
    cfg = config(dominant("vib", "Vibration", priority=10), burst("storm", n=3, window=5), fallback(severity="INFO"))
    alerts = run(cfg, *(point(m, families=VIB) for m in range(5)))
    assert alerts["rule_name"].to_list() == ["vib"]


def test_no_dominant_family_is_the_answer_only_when_there_is_none():
    mixed = [{"Vibration": 40.0, "Temperature": 35.0, "RPM": 25.0}, {"Temperature": 45.0, "Vibration": 30.0, "RPM": 25.0}]
    cfg = config(dominant("vib", "Vibration", priority=10), dominant("temp", "Temperature", priority=10),
                 burst("storm", n=3, window=5), fallback(severity="INFO"))
    alerts = run(cfg, *(point(m, families=mixed[m % 2]) for m in range(6)))
    assert alerts["rule_name"].to_list() == ["storm"]


def test_the_cause_is_revised_as_evidence_grows_and_keeps_its_id():
    cfg = config(dominant("vib", "Vibration"), dominant("temp", "Temperature"), fallback(severity="INFO"))
    early = run(cfg, point(0, families=TEMP), point(1, families=TEMP))
    later = run(cfg, point(0, families=TEMP), point(1, families=TEMP), *(point(m, families=VIB) for m in range(2, 8)))
    assert early["rule_name"].to_list() == ["temp"] and later["rule_name"].to_list() == ["vib"]
    assert early["alert_id"].to_list() == later["alert_id"].to_list()


def test_stronger_points_weigh_more_in_the_incidents_families():
    cfg = config(dominant("vib", "Vibration"), dominant("temp", "Temperature"))
    alerts = run(cfg, point(0, families=TEMP, score=1.0), point(1, families=TEMP, score=1.0),
                 point(2, families=VIB, score=10.0))
    assert alerts["rule_name"].to_list() == ["vib"]


def test_confidence_grows_with_the_margin_and_the_evidence():
    cfg = config(dominant("vib", "Vibration", min_percent=50))
    clear = run(cfg, *(point(m, families={"Vibration": 95.0, "RPM": 5.0}) for m in range(10)))
    narrow = run(cfg, *(point(m, families={"Vibration": 55.0, "RPM": 45.0}) for m in range(10)))
    short = run(cfg, point(0, families={"Vibration": 95.0, "RPM": 5.0}))
    c_clear, c_narrow, c_short = (a["confidence"].item() for a in (clear, narrow, short))
    assert c_clear == pytest.approx(0.9 * 10 / 11, abs=1e-3)  # (0.95 - 0.05) x 10 / (10 + 1)
    assert c_narrow == pytest.approx(0.1 * 10 / 11, abs=1e-3)
    assert c_short == pytest.approx(0.9 / 2, abs=1e-3)


def test_an_incident_fires_until_the_data_runs_past_resolve_after():
    raw = {"defaults": {"default_route": "ops", "resolve_after_minutes": 30}, "rules": [dominant("vib", "Vibration")]}
    cfg = parse_alert_rules(raw, DEFAULT_FAMILIES, source=SOURCE)
    points = [point(m, families=VIB) for m in (0, 1, 2)]
    def status(data_end):
        return run(cfg, *points, data_end=pl.DataFrame({"device_id": ["DEV-001"], "data_end": [data_end]}))["status"].item()
    assert status(at(2)) == "firing" and status(at(31, seconds=59)) == "firing"
    assert status(at(32)) == "resolved"
    assert run(cfg, *points)["status"].item() == "firing"  # without data_end: the last flagged point is the latest


# --- silences ----------------------------------------------------------------------------------------------------


def silence(device="DEV-00*", start=60, end=120, **kw):
    return {"device": device, "start": at(start).isoformat(), "end": at(end).isoformat(), **kw}


def test_glob_silence_suppresses_matching_devices_only():
    cfg = vib_cfg(silences=[silence(name="maint")])
    alerts = run(cfg, point(90, "DEV-001", families=VIB), point(90, "DEV-100", families=VIB))
    assert alerts.select("device_id", "suppressed_by").rows() == [("DEV-001", "silence:maint"), ("DEV-100", None)]


def test_glob_character_classes_work():
    cfg = vib_cfg(silences=[silence(device="DEV-00[12]", name="m")])
    alerts = run(cfg, *(point(90, f"DEV-00{i}", families=VIB) for i in (1, 2, 3)))
    assert alerts["suppressed_by"].to_list() == ["silence:m", "silence:m", None]


def test_regex_silence_must_match_the_whole_device_id():
    cfg = vib_cfg(silences=[{**silence(), "device": None, "device_regex": r"DEV-0\d{2}", "name": "re"}])
    alerts = run(cfg, point(90, "DEV-001", families=VIB), point(90, "DEV-0011", families=VIB))
    assert alerts["suppressed_by"].to_list() == ["silence:re", None]


def test_unnamed_silence_is_named_by_its_list_index():
    cfg = vib_cfg(silences=[silence(device="OTHER"), silence()])
    assert run(cfg, point(90, "DEV-001", families=VIB))["suppressed_by"].to_list() == ["silence:1"]


@pytest.mark.parametrize(
    ("minutes", "silenced"),
    [
        ([50, 60], True),  # ends exactly at the silence start: overlaps
        ([50, 59], False),  # ends a minute before the start
        ([120, 125], False),  # starts exactly at the (exclusive) end
        ([119, 125], True),  # starts inside
        ([55, 65, 75, 85, 95, 105, 115, 125], True),  # spans the whole window
    ],
)
def test_silence_window_edges(minutes, silenced):
    # given a silence [01:00, 02:00) and an alert spanning these minutes
    cfg = vib_cfg(silences=[silence(name="w")])
    alerts = run(cfg, *(point(m, families=VIB) for m in minutes))
    # then the half-open window decides
    assert alerts["suppressed_by"].to_list() == (["silence:w"] if silenced else [None])


def test_silence_takes_precedence_over_min_events():
    cfg = config(dominant("vib", "Vibration", min_events=5), silences=[silence(name="maint")])
    assert run(cfg, point(61, families=VIB))["suppressed_by"].to_list() == ["silence:maint"]


def test_silence_times_with_an_offset_are_converted_to_utc():
    # given a silence written in UTC+01:00 covering 00:00-01:00 UTC
    cfg = vib_cfg(silences=[{"device": "*", "start": "2026-01-02T01:00:00+01:00", "end": "2026-01-02T02:00:00+01:00"}])
    alerts = run(cfg, point(30, families=VIB), point(61, "DEV-2", families=VIB))
    assert alerts["suppressed_by"].to_list() == ["silence:0", None]


# --- deterministic ids and the output window ---------------------------------------------------------------------


def sample_points():
    return frame(
        *(point(m, "DEV-A", families=VIB) for m in (-30, -29, 0, 1, 2)),
        *(point(m, "DEV-B", families=TEMP, tag="Over-Heat") for m in (5, 6, 40)),
        point(7, "DEV-A", flagged=False),
    )


def sample_cfg():
    return config(dominant("vib", "Vibration", severity="CRITICAL"), dominant("temp", "Temperature"),
                  fallback(severity="INFO"))


def test_same_input_twice_gives_identical_output():
    first = evaluate_alerts(sample_points(), sample_cfg())
    second = evaluate_alerts(sample_points(), sample_cfg())
    assert_frame_equal(first, second)
    assert first.height == 4 and first["alert_id"].n_unique() == 4


def test_shuffled_input_rows_give_identical_output():
    points = sample_points()
    shuffled = points.sample(fraction=1.0, shuffle=True, seed=11)
    assert shuffled["ts"].to_list() != points["ts"].to_list()
    assert_frame_equal(evaluate_alerts(points, sample_cfg()), evaluate_alerts(shuffled, sample_cfg()))


def test_alert_id_is_the_sha1_of_device_and_start():
    alerts = run(vib_cfg(), point(0, "DEV-A", families=VIB))
    expected = hashlib.sha1(b"DEV-A|2026-01-02T00:00:00.000000").hexdigest()[:16]
    assert alerts["alert_id"].to_list() == [expected] == [alert_id("DEV-A", at(0))]


def test_alert_ids_differ_by_device_and_start():
    assert len({alert_id("D1", at(0)), alert_id("D2", at(0)), alert_id("D1", at(0, microseconds=1))}) == 3


def test_window_start_keeps_alerts_ending_at_or_after_it():
    # given an incident ending one second before midnight and one ending exactly at midnight
    cfg = config(dominant("vib", "Vibration"), dominant("temp", "Temperature"))
    points = [point(at(-1, seconds=59), families=VIB), point(0, "DEV-2", families=TEMP)]
    # when only day D is wanted
    alerts = run(cfg, *points, window_start=DAY)
    # then only the alert touching day D is returned
    assert alerts.select("device_id", "end_ts").rows() == [("DEV-2", at(0))]


def test_window_start_filters_without_changing_ids():
    everything = evaluate_alerts(sample_points(), sample_cfg())
    day_only = evaluate_alerts(sample_points(), sample_cfg(), window_start=DAY)
    assert day_only.height == everything.height - 1
    assert_frame_equal(day_only, everything.filter(everything["end_ts"] >= DAY))


def test_an_incident_from_the_context_day_keeps_its_start_and_id_on_day_d():
    points = [point(-20, families=VIB), point(-12, families=VIB), point(-4, families=VIB), point(5, families=VIB)]
    alerts = run(vib_cfg(), *points, window_start=DAY)
    assert alerts.select("start_ts", "alert_id").rows() == [(at(-20), alert_id("DEV-001", at(-20)))]


# --- minimum evidence (min_events) -------------------------------------------------------------------------------


def test_an_incident_below_min_events_is_kept_but_does_not_page():
    # given a rule that needs 3 flagged points and an incident of 2
    cfg = config(dominant("vib", "Vibration", min_events=3))
    alerts = run(cfg, point(0, families=VIB), point(1, families=VIB))
    # then the incident is there, marked, not active
    assert alerts.select("n_events", "suppressed_by").rows() == [(2, "min_events:3")]


def test_an_incident_reaching_min_events_pages():
    cfg = config(dominant("vib", "Vibration", min_events=3))
    alerts = run(cfg, *(point(m, families=VIB) for m in (0, 1, 2)))
    assert alerts.select("n_events", "suppressed_by").rows() == [(3, None)]


def test_min_events_defaults_apply_to_rules_without_their_own():
    # given defaults.min_events=2 and a rule without min_events
    raw = {"defaults": {"default_route": "ops", "min_events": 2}, "rules": [dominant("vib", "Vibration")]}
    cfg = parse_alert_rules(raw, DEFAULT_FAMILIES, source=SOURCE)
    # when a single point is flagged, then it does not page
    assert run(cfg, point(0, families=VIB))["suppressed_by"].to_list() == ["min_events:2"]


def test_min_events_below_one_is_a_config_error():
    with pytest.raises(AlertRulesError, match=r"Rule 'vib': min_events=0 must be at least 1"):
        config(dominant("vib", "Vibration", min_events=0))


# --- the deadband: a fault that lulls between flags stays one incident -------------------------------------------


def _lull(scores_between: list[float], *, gap_minutes: int = 1) -> pl.DataFrame:
    """One device, a point a minute: 5 flagged points, then `scores_between` (unflagged), then 5 flagged points."""
    scores = [2.0] * 5 + scores_between + [2.0] * 5
    flagged = [True] * 5 + [False] * len(scores_between) + [True] * 5
    return pl.DataFrame({"ts": [at(i * gap_minutes) for i in range(len(scores))], "device_id": "DEV-001",
                         "score": scores, "is_anomaly": flagged})


def _deadband_alerts(scored: pl.DataFrame, cfg: AlertRulesConfig = None) -> pl.DataFrame:
    cfg = cfg or vib_cfg(merge_gap=15)
    states = deadband_states(scored, cfg.defaults.clear_ratio, cfg.defaults.hold_minutes)
    points = scored.hstack(states).filter("is_anomaly").with_columns(
        family_pct=pl.lit(VIB, dtype=pl.Struct({"Vibration": pl.Float64, "RPM": pl.Float64})))
    data_end = scored.hstack(states).group_by("device_id").agg(pl.col("ts").last().alias("data_end"),
                                                               pl.col("held_flag").last())
    return evaluate_alerts(points, cfg, data_end=data_end)


def test_a_lull_above_the_clear_level_keeps_one_incident():
    # given an hour between two flagged stretches, longer than the merge gap, with scores at 0.6-0.9 x threshold
    one = _deadband_alerts(_lull([0.6, 0.9] * 30))
    # then the two stretches are one incident of 10 events
    assert one.height == 1 and one["n_events"].item() == 10


def test_a_recovery_below_the_clear_level_ends_the_incident():
    # given the same hour with one score below half the threshold in the middle of it
    two = _deadband_alerts(_lull([0.6] * 30 + [0.3] + [0.6] * 29))
    assert two.height == 2


def test_the_deadband_holds_at_most_hold_minutes_and_can_be_turned_off():
    lull = _lull([0.6] * 300)  # five hours
    assert _deadband_alerts(lull).height == 2  # beyond the default hold of 240 min
    assert _deadband_alerts(_lull([0.6] * 60), vib_cfg(merge_gap=15, deadband={"clear_ratio": 1.0})).height == 2
    assert _deadband_alerts(_lull([0.6] * 60), vib_cfg(merge_gap=15, deadband={"hold_minutes": 0})).height == 2


def test_an_incident_in_its_deadband_keeps_firing():
    # given a flagged stretch followed by an hour of scores just under the threshold
    scored = _lull([0.8] * 60).head(65)
    assert _deadband_alerts(scored)["status"].item() == "firing"  # not yet recovered: no resolve, no re-page
    # once the score falls below the clear level, resolve_after_minutes later it is resolved
    recovered = pl.concat([scored, _lull([0.1] * 40).slice(5, 40).with_columns(
        ts=pl.col("ts") + timedelta(minutes=65))])
    assert _deadband_alerts(recovered)["status"].item() == "resolved"


def test_the_deadband_depends_only_on_earlier_points():
    lull = _lull([0.6, 0.2, 0.7, 0.9] * 20)
    whole = deadband_states(lull, 0.5, 240)
    for n in (7, 30, 60):
        assert whole.head(n).equals(deadband_states(lull.head(n), 0.5, 240))
