"""Bounded alert rules (issue 19): every number in a rule file has a range checked when the file loads, a silence's
``device_regex`` runs on RE2 (linear time), and the number of rules and silences and the file's size are bounded.
So a rule file the loader accepts cannot make the ``alerts`` step fail or take longer than linear time in
points x rules; every file below is one the issue's attack used, written by the test.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from itap_assets.core.alerting import ALERT_SCHEMA, AlertRulesError, evaluate_alerts, load_alert_rules
from itap_assets.core.alerting.config import MAX_COUNT, MAX_MINUTES, MAX_RULES, MAX_SILENCES, PRIORITY_RANGE
from itap_assets.resources import AlertRules
from itap_assets.settings import PROJECT_ROOT
from itap_assets_tests.core.alerting.builders import VIB, frame, point

SHIPPED = (PROJECT_ROOT / "configs" / "alert_rules.yaml").read_text(encoding="utf-8")
FAMILIES = ["Temperature", "Vibration", "Voltage", "Current", "RPM", "State", "DataQuality"]
SETTINGS = str(PROJECT_ROOT / "configs" / "itap.yaml")
YEAR = r"must be a finite number of minutes, at most 525,600 \(one year\)"
SILENCE = "silences:\n  - {name: m, %s, start: 2026-01-01T00:00:00, end: 2026-01-02T00:00:00}\n"
RECEIVER = "receivers:\n  - {name: ops, type: webhook, url: 'https://hooks.example.com/x', page_within_hours: %s}\n"

# (case, text in the shipped file, its hostile replacement, the message after "<file>: ")
HOSTILE = [
    ("merge_gap_1e12", "merge_gap_minutes: 15 ", "merge_gap_minutes: 1e12", rf"defaults: merge_gap_minutes='1e12' {YEAR}"),
    ("default_cooldown_1e12", "cooldown_minutes: 30 ", "cooldown_minutes: 1e12",
     rf"defaults: cooldown_minutes='1e12' {YEAR}"),
    ("rule_cooldown_1e12", "cooldown_minutes: 60", "cooldown_minutes: 1e12",
     rf"Rule 'anomaly_burst': cooldown_minutes='1e12' {YEAR}"),
    ("resolve_after_inf", "resolve_after_minutes: 30", "resolve_after_minutes: .inf",
     rf"defaults: resolve_after_minutes=inf {YEAR}"),
    ("priority_1e23", "priority: 20 ", "priority: 1e23",
     r"Rule 'electrical_fault': priority='1e23' must be between -2,147,483,648 and 2,147,483,647 \(int32\)"),
    ("priority_10_to_23_as_integer", "priority: 20 ", "priority: 100000000000000000000000",
     r"Rule 'electrical_fault': priority=100000000000000000000000 must be between -2,147,483,648 and 2,147,483,647"),
    ("min_events_1e20", "min_events: 6             # the burst", "min_events: 1e20 #",
     r"Rule 'anomaly_burst': min_events='1e20' must be at most 1,000,000"),
    ("default_min_events_1e20", "min_events: 3 ", "min_events: 1.0e+20 ",
     r"defaults: min_events=100000000000000000000 must be at most 1,000,000"),
    ("min_anomalies_1e20", "min_anomalies: 6", "min_anomalies: 1e20",
     r"Rule 'anomaly_burst': min_anomalies='1e20' must be at most 1,000,000"),
    ("window_inf", "window_minutes: 10", "window_minutes: .inf", rf"Rule 'anomaly_burst': window_minutes=inf {YEAR}"),
    ("window_1e-12", "window_minutes: 10", "window_minutes: 1.0e-12",
     r"Rule 'anomaly_burst': window_minutes=1e-12 must be at least 1/60 minute \(one second\)"),
    ("window_nan", "window_minutes: 10", "window_minutes: .nan", r"Rule 'anomaly_burst': window_minutes=nan must be"),
    ("min_percent_nan", "min_percent: 30", "min_percent: .nan",
     r"Rule 'electrical_fault': min_percent=nan must be between 0 and 100"),
    ("min_score_inf", "min_score: 3.0,", "min_score: .inf,",
     r"Rule 'score_bands': bands\[0\]\.min_score=inf must be a finite number"),
    ("regex_backreference", "silences: []\n", SILENCE % "device_regex: '(a)\\1'",
     r"Silence 'm': device_regex='\(a\)\\\\1' is not a valid regular expression in RE2 syntax"),
    ("regex_too_long", "silences: []\n", SILENCE % f"device_regex: '{'a' * 257}'",
     r"Silence 'm': device_regex='a+\.\.\.a+': String should have at most 256 characters"),
    ("cause_of_1001_characters", "cause: Burst of anomalies without a single dominant sensor family",
     f"cause: {'x' * 1001}", r"Rule 'anomaly_burst': cause='x+\.\.\.x+': String should have at most 1000 characters"),
    ("page_within_hours_inf", "receivers: []\n", RECEIVER % ".inf",
     r"Receiver 'ops': page_within_hours=inf: Input should be less than or equal to 8760"),
]


def hostile_file(tmp_path: Path, old: str, new: str) -> Path:
    assert SHIPPED.count(old) == 1, old
    path = tmp_path / "alert_rules.yaml"
    path.write_text(SHIPPED.replace(old, new), encoding="utf-8")
    return path


@pytest.mark.parametrize(("old", "new", "message"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_an_out_of_range_number_fails_the_load_naming_file_rule_and_field(tmp_path, old, new, message):
    path = hostile_file(tmp_path, old, new)
    with pytest.raises(AlertRulesError, match=rf"^{re.escape(str(path))}: {message}") as info:
        load_alert_rules(path, FAMILIES)
    assert "\n" not in str(info.value)
    # the AlertRules resource is what `dagster definitions validate` builds: it fails with the same line
    with pytest.raises(ValidationError, match=re.escape(str(info.value))):
        AlertRules(path=str(path), config_path=SETTINGS)


def test_dagster_definitions_validate_fails_on_a_hostile_rule_file(tmp_path):
    """The issue's `priority: 1e23` through the real command (the other cases go through the same resource)."""
    path = hostile_file(tmp_path, "priority: 20 ", "priority: 1e23")
    done = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate"],
                          cwd=PROJECT_ROOT, env={"ITAP_ALERT_RULES": str(path), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"{path}: Rule 'electrical_fault': priority='1e23' must be between" in done.stdout + done.stderr


def rules_text(n: int) -> str:
    rule = ("  - {{name: r{i}, type: dominant_family, families: [Vibration], min_percent: 50, severity: INFO, "
            "cause: c, action: a}}\n")
    return "defaults: {default_route: ops}\nrules:\n" + "".join(rule.format(i=i) for i in range(n))


def test_more_rules_than_allowed_fail_the_load(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(rules_text(MAX_RULES + 1), encoding="utf-8")
    assert path.stat().st_size < 1_000_000
    with pytest.raises(AlertRulesError, match=rf"^{re.escape(str(path))}: rules: 1,001 rules, at most 1,000 are"):
        load_alert_rules(path, FAMILIES)


def test_more_silences_than_allowed_fail_the_load(tmp_path):
    silence = "  - {device: 'DEV-*', start: 2026-01-01T00:00:00, end: 2026-01-02T00:00:00}\n"
    path = tmp_path / "silences.yaml"
    path.write_text(rules_text(1) + "silences:\n" + silence * (MAX_SILENCES + 1), encoding="utf-8")
    with pytest.raises(AlertRulesError, match=r"silences: 1,001 silences, at most 1,000 are allowed"):
        load_alert_rules(path, FAMILIES)


def test_a_10_mb_file_of_39191_rules_fails_at_once(tmp_path):
    """The attack's file validated in 39 s and then never finished evaluating; now only its first megabyte is read."""
    path = tmp_path / "huge.yaml"
    path.write_text(rules_text(39_191) + "#" * max(0, 10_000_000 - len(rules_text(39_191))), encoding="utf-8")
    assert path.stat().st_size >= 10_000_000
    started = time.perf_counter()
    with pytest.raises(AlertRulesError, match=rf"^{re.escape(str(path))}: larger than 1,000,000 bytes \(1 MB\)"):
        load_alert_rules(path, FAMILIES)
    assert time.perf_counter() - started < 2


def test_a_file_that_is_not_utf8_fails_the_load_in_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(SHIPPED.replace("Overheating", "Überhitzung").encode("latin-1", errors="replace"))
    with pytest.raises(AlertRulesError, match=rf"^{re.escape(str(path))}: not UTF-8 text \(byte \d+\)$"):
        load_alert_rules(path, FAMILIES)


def test_a_file_nested_too_deeply_fails_the_load_in_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("rules: " + "[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(AlertRulesError, match=rf"^{re.escape(str(path))}: nested too deeply to be a rule file$"):
        load_alert_rules(path, FAMILIES)


# ------------------------------------------------------------------------ accepted files evaluate in linear time

def points(devices: int, per_device: int, device=lambda d: f"DEV-{d:03d}") -> pl.DataFrame:
    """Flagged points a minute apart on each device, in bursts of 20 with hour-long gaps between them."""
    return frame(*(point(i + 60 * (i // 20), device(d), score=1.0 + i % 7, families=VIB)
                   for d in range(devices) for i in range(per_device)))


def test_the_extremes_of_every_range_evaluate_without_error(tmp_path):
    low, high = PRIORITY_RANGE
    path = tmp_path / "extreme.yaml"
    path.write_text(f"""
defaults: {{merge_gap_minutes: {MAX_MINUTES}, cooldown_minutes: {MAX_MINUTES}, resolve_after_minutes: {MAX_MINUTES},
           min_events: {MAX_COUNT}, default_route: ops}}
rules:
  - {{name: levels, type: score_level, bands: [{{min_score: 1.0e+300, severity: CRITICAL}}, {{min_score: 0, severity: INFO}}]}}
  - {{name: wide, type: burst, min_anomalies: {MAX_COUNT}, window_minutes: {MAX_MINUTES}, priority: {high},
     cooldown_minutes: {MAX_MINUTES}, min_events: {MAX_COUNT}, cause: c, action: a}}
  - {{name: narrow, type: burst, min_anomalies: 1, window_minutes: 0.0166667, priority: {low}, cause: c, action: a}}
  - {{name: faint, type: dominant_family, families: [Vibration], min_percent: 5.0e-324, priority: {low}, cause: c,
     action: a}}
  - {{name: rest, type: fallback, cause: c, action: a}}
""", encoding="utf-8")
    config = load_alert_rules(path, FAMILIES)
    out = evaluate_alerts(points(3, 200), config, window_start=datetime(2026, 1, 1))
    assert dict(out.schema) == ALERT_SCHEMA
    assert out["device_id"].to_list() == ["DEV-000", "DEV-001", "DEV-002"]  # a year's gap: one incident each
    assert set(out["suppressed_by"]) == {f"min_events:{MAX_COUNT}"}


def test_the_largest_rule_count_evaluates_in_linear_time(tmp_path):
    """1,000 rules (burst and family rules, each with its own window and priority) and 1,000 silences on
    10 devices x 500 points:
    the time bound is loose for CI; the attack's 39,191 rules never finished."""
    rules = [f"  - {{name: b{i}, type: burst, min_anomalies: {1 + i % 30}, window_minutes: {1 + i % 90}, "
             f"priority: {i}, severity: WARNING, cause: c, action: a}}\n" for i in range(MAX_RULES // 2)]
    rules += [f"  - {{name: f{i}, type: dominant_family, families: [Vibration], min_percent: {1 + i % 99}, "
              f"priority: {i}, severity: INFO, cause: c, action: a}}\n" for i in range(MAX_RULES // 2 - 1)]
    silences = [f"  - {{{'device: DEV-*' if i % 2 else 'device_regex: DEV-.*'}, start: 2030-01-0{1 + i % 9}T00:00:00,"
                f" end: 2030-01-10T00:00:00}}\n" for i in range(MAX_SILENCES)]  # every device, none of its days
    path = tmp_path / "max.yaml"
    path.write_text("defaults: {default_route: ops}\nrules:\n" + "".join(rules)
                    + "  - {name: rest, type: fallback, severity: INFO, cause: c, action: a}\n"
                    + "silences:\n" + "".join(silences), encoding="utf-8")
    config = load_alert_rules(path, FAMILIES)
    assert len(config.rules) == MAX_RULES and len(config.silences) == MAX_SILENCES
    started = time.perf_counter()
    out = evaluate_alerts(points(10, 500), config)
    assert time.perf_counter() - started < 60
    assert out.height == 10 * 25 and out["rule_name"].str.starts_with("b").all()  # a burst has the top priority
    assert out["suppressed_by"].is_null().all()


def test_a_backtracking_regex_does_not_spin(tmp_path):
    """Python's re needs ~2^64 steps for "(a+)+b" against a 64-character id of a's; RE2 answers at once, and the
    pattern still means what it says."""
    path = hostile_file(tmp_path, "silences: []\n", SILENCE % "device_regex: '(a+)+b'")
    config = load_alert_rules(path, FAMILIES)
    evil, matching = "a" * 64, "a" * 63 + "b"
    flagged = points(2, 30, device=lambda d: (evil, matching)[d])
    started = time.perf_counter()
    out = evaluate_alerts(flagged.with_columns(ts=pl.col("ts") - timedelta(days=1)), config)
    assert time.perf_counter() - started < 10
    silenced = dict(out.group_by("device_id").agg(pl.col("suppressed_by").first()).iter_rows())
    assert silenced[matching] == "silence:m" and silenced[evil] != "silence:m"
