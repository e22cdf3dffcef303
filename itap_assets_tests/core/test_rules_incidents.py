"""Incidents, not event spam: merging, cooldown, inhibition, silences, deterministic ids and the output window."""

from __future__ import annotations

import hashlib

import pytest
from polars.testing import assert_frame_equal

from itap_assets.core.rules import DEFAULT_FAMILIES, AlertRulesError, alert_id, evaluate_alerts, parse_alert_rules
from itap_assets_tests.core.test_rules_support import (
    DAY,
    SOURCE,
    TEMP,
    VIB,
    at,
    config,
    dominant,
    fallback,
    frame,
    point,
    run,
)

RPM = {"RPM": 90.0, "Voltage": 10.0}


def vib_cfg(**kw):
    return config(dominant("vib", "Vibration", severity=kw.pop("severity", "WARNING"),
                           **({"cooldown_minutes": kw.pop("rule_cooldown")} if "rule_cooldown" in kw else {})), **kw)


def three_severities(**kw):
    """vib CRITICAL, temp WARNING, rpm INFO: one rule per family."""
    return config(
        dominant("vib", "Vibration", severity="CRITICAL"),
        dominant("temp", "Temperature", severity="WARNING"),
        dominant("rpm", "RPM", severity="INFO"),
        **kw,
    )


def by_rule(alerts):
    return {r["rule_name"]: r for r in alerts.to_dicts()}


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


def test_different_rules_on_one_device_are_separate_incidents():
    cfg = config(dominant("vib", "Vibration"), dominant("temp", "Temperature"))
    alerts = run(cfg, point(0, families=VIB), point(1, families=TEMP), point(2, families=VIB))
    assert alerts.select("rule_name", "n_events").sort("rule_name").rows() == [("temp", 1), ("vib", 2)]


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


def test_rule_cooldown_overrides_the_default():
    # given a default cooldown of 30 but the rule's own cooldown of 0
    alerts = run(vib_cfg(merge_gap=10, cooldown=30, rule_cooldown=0), point(0, families=VIB), point(25, families=VIB))
    # then the merge gap alone decides: two incidents
    assert alerts.height == 2


def test_cooldown_restarts_from_the_extended_end():
    alerts = run(vib_cfg(merge_gap=10, cooldown=30), *(point(m, families=VIB) for m in (0, 25, 50, 75)))
    assert alerts.select("start_ts", "end_ts", "n_events").rows() == [(at(0), at(75), 4)]


def test_duplicate_rows_for_one_device_and_timestamp_count_once():
    alerts = run(vib_cfg(), point(0, families=VIB), point(0, families=VIB), point(1, families=VIB))
    assert alerts["n_events"].to_list() == [2]


# --- inhibition --------------------------------------------------------------------------------------------------


def test_critical_alert_inhibits_an_overlapping_warning_of_the_same_device():
    # given interleaved vibration (CRITICAL) and temperature (WARNING) points on one device
    points = [point(m, families=VIB if m % 2 == 0 else TEMP) for m in range(6)]
    alerts = by_rule(run(three_severities(), *points))
    # then the warning is kept but suppressed by the critical alert's id
    assert alerts["vib"]["suppressed_by"] is None
    assert alerts["temp"]["suppressed_by"] == alerts["vib"]["alert_id"]


def test_an_incident_open_before_the_critical_one_began_is_not_retracted():
    # given a temperature WARNING incident open from minute 0 and a vibration CRITICAL one from minute 3
    points = [point(m, families=TEMP) for m in range(6)] + [point(at(3, seconds=30), families=VIB)]
    alerts = by_rule(run(three_severities(), *points))
    # then the warning stays active: it paged before the critical incident existed
    assert alerts["temp"]["suppressed_by"] is None and alerts["vib"]["suppressed_by"] is None


def test_non_overlapping_alerts_do_not_inhibit():
    points = [point(0, families=VIB), point(5, families=VIB), point(at(5, microseconds=1), families=TEMP)]
    alerts = run(three_severities(), *points)
    assert alerts["suppressed_by"].to_list() == [None, None]


def test_alerts_of_other_devices_are_not_inhibited():
    alerts = by_rule(run(three_severities(), point(0, "DEV-A", families=VIB), point(0, "DEV-B", families=TEMP)))
    assert alerts["temp"]["suppressed_by"] is None


def test_same_severity_does_not_inhibit():
    cfg = config(dominant("vib", "Vibration", severity="WARNING"), dominant("temp", "Temperature", severity="WARNING"))
    alerts = run(cfg, point(0, families=VIB), point(1, families=TEMP), point(2, families=VIB))
    assert alerts["suppressed_by"].to_list() == [None, None]


def test_empty_inhibit_list_turns_inhibition_off():
    points = [point(m, families=VIB if m % 2 == 0 else TEMP) for m in range(4)]
    assert run(three_severities(inhibit=[]), *points)["suppressed_by"].to_list() == [None, None]


def test_inhibit_limited_to_target_rules():
    # given an inhibit entry that only mutes the rpm rule
    inhibit = [{"name": "only_rpm", "source_severity": "CRITICAL", "target_severity": ["WARNING", "INFO"],
                "target_rules": ["rpm"]}]
    points = [point(0, families=VIB), point(1, families=TEMP), point(2, families=RPM), point(3, families=VIB)]
    alerts = by_rule(run(three_severities(inhibit=inhibit), *points))
    # then the temperature warning stays active and the rpm info alert is suppressed
    assert alerts["temp"]["suppressed_by"] is None
    assert alerts["rpm"]["suppressed_by"] == alerts["vib"]["alert_id"]


def test_the_highest_severity_inhibitor_is_named():
    points = [point(0, families=VIB), point(1, families=TEMP), point(2, families=RPM), point(3, families=TEMP),
              point(4, families=VIB)]
    alerts = by_rule(run(three_severities(), *points))
    assert alerts["rpm"]["suppressed_by"] == alerts["vib"]["alert_id"]
    assert alerts["temp"]["suppressed_by"] == alerts["vib"]["alert_id"]


def test_explicit_source_severity_only_inhibits_what_it_lists():
    # given an entry where only WARNING inhibits INFO
    inhibit = [{"source_severity": "WARNING", "target_severity": "INFO"}]
    points = [point(0, families=VIB), point(1, families=TEMP), point(2, families=RPM), point(3, families=TEMP),
              point(4, families=VIB)]
    alerts = by_rule(run(three_severities(inhibit=inhibit), *points))
    # then the critical alert inhibits nothing and the warning inhibits the info alert
    assert alerts["temp"]["suppressed_by"] is None
    assert alerts["rpm"]["suppressed_by"] == alerts["temp"]["alert_id"]


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


def test_silence_takes_precedence_over_inhibition():
    points = [point(m, families=VIB if m % 2 == 0 else TEMP) for m in range(60, 66)]
    alerts = run(three_severities(silences=[silence(name="maint")]), *points)
    assert alerts["suppressed_by"].to_list() == ["silence:maint", "silence:maint"]


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


def test_alert_id_is_the_sha1_of_device_rule_and_start():
    alerts = run(vib_cfg(), point(0, "DEV-A", families=VIB))
    expected = hashlib.sha1(b"DEV-A|vib|2026-01-02T00:00:00.000000").hexdigest()[:16]
    assert alerts["alert_id"].to_list() == [expected] == [alert_id("DEV-A", "vib", at(0))]


def test_alert_ids_differ_by_device_rule_and_start():
    ids = {alert_id("D1", "r", at(0)), alert_id("D2", "r", at(0)), alert_id("D1", "s", at(0)),
           alert_id("D1", "r", at(0, microseconds=1))}
    assert len(ids) == 4


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


def test_alert_of_the_context_day_still_inhibits_an_alert_of_day_d():
    # given a CRITICAL incident on D-1 overlapping a WARNING incident that runs into day D
    points = [point(-20, families=VIB), point(-12, families=TEMP), point(-10, families=VIB), point(5, families=TEMP),
              point(-4, families=TEMP)]
    alerts = run(three_severities(), *points, window_start=DAY)
    # then only the warning is returned, still suppressed by the (context) critical alert
    assert alerts.select("rule_name", "suppressed_by").rows() == [("temp", alert_id("DEV-001", "vib", at(-20)))]


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


def test_a_too_small_incident_does_not_inhibit_others():
    # given a CRITICAL rule needing 5 points and a WARNING rule, overlapping on one device
    cfg = config(dominant("vib", "Vibration", severity="CRITICAL", min_events=5), dominant("temp", "Temperature"))
    alerts = run(cfg, point(0, families=VIB), point(1, families=TEMP), point(2, families=TEMP))
    by_rule = dict(alerts.select("rule_name", "suppressed_by").rows())
    # then the small CRITICAL incident is marked and the WARNING one stays active
    assert by_rule == {"vib": "min_events:5", "temp": None}


def test_min_events_below_one_is_a_config_error():
    with pytest.raises(AlertRulesError, match=r"Rule 'vib': min_events=0 must be at least 1"):
        config(dominant("vib", "Vibration", min_events=0))
