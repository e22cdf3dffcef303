"""`itap ack / unack / silence / export alerts` on a small database: operator state survives recomputing alerts,
errors are one line and exit code 2."""

import json
from datetime import date, datetime

import polars as pl
import pytest
from click.testing import CliRunner

from itap_assets import storage
from itap_assets.cli import main
from itap_assets.resources import DB_SCHEMA

DAY = date(2026, 1, 2)


def alerts(cause: str = "Bearing wear") -> pl.DataFrame:
    """Two incidents of one device-day, as the alerts step stores them."""
    return pl.DataFrame({
        "alert_id": ["a1", "a2"], "device_id": ["DEV-0001"] * 2, "day": [DAY] * 2,
        "start_ts": [datetime(2026, 1, 2, 5, 31, 10), datetime(2026, 1, 2, 9, 0)],
        "end_ts": [datetime(2026, 1, 2, 6, 0), datetime(2026, 1, 2, 9, 30)], "status": ["resolved", "firing"],
        "severity": ["CRITICAL", "WARNING"], "rule_name": ["bearing_wear", "overheating"], "cause": [cause, "Hot"],
        "route": ["maintenance"] * 2, "confidence": [0.8, 0.6], "max_score": [4.21234, 1.7], "n_events": [7, 4],
        "families": ['{"Vibration": 71.54, "Temperature": 20.0}', '{"Temperature": 90.0}'],
        "top_features": ["[]", "[]"], "action": ["Inspect", "Cool"], "suppressed_by": [None, None],
    })


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "itap.duckdb"
    storage.replace_partitions(path, DB_SCHEMA, "alerts", alerts(), storage.partition_frame([DAY], ["DEV-0001"]))
    return path


def itap(db, *args: str):
    return CliRunner().invoke(main, [*args, "--db", str(db)])


def feed_state(db) -> dict:
    with storage.connect(db) as con:
        rows = con.sql("SELECT alert_id, acked_by, ack_note, silenced_until, silenced_by FROM v_alerts").fetchall()
    return {r[0]: r[1:] for r in rows}


def test_ack_unack_and_silence_show_in_v_alerts_and_survive_recomputing_alerts(db):
    assert itap(db, "ack", "a1", "--by", "alice", "--note", "on it").exit_code == 0
    assert itap(db, "silence", "a2", "--by", "bob", "--until", "2026-01-03T08:00+01:00").exit_code == 0
    storage.replace_partitions(db, DB_SCHEMA, "alerts", alerts("Bearing wear, confirmed"),
                               storage.partition_frame([DAY], ["DEV-0001"]))
    assert feed_state(db) == {"a1": ("alice", "on it", None, None),
                              "a2": (None, None, datetime(2026, 1, 3, 7, 0), "bob")}
    assert itap(db, "unack", "a1", "--by", "alice").exit_code == 0
    assert feed_state(db)["a1"] == (None, None, None, None)
    with storage.connect(db) as con:
        assert con.sql("SELECT action FROM alert_acks ORDER BY acted_at").fetchall() == [
            ("ack",), ("silence",), ("unack",)]


def test_an_unknown_alert_or_a_bad_time_is_one_line_and_exit_code_2(db, tmp_path):
    result = itap(db, "ack", "nope", "--by", "alice")
    assert result.exit_code == 2 and result.output.strip().count("\n") == 0
    assert "unknown alert id 'nope'" in result.output
    assert itap(tmp_path / "missing.duckdb", "ack", "a1", "--by", "x").exit_code == 2
    assert not (tmp_path / "missing.duckdb").exists()
    assert itap(db, "silence", "a1", "--by", "x", "--until", "soon").exit_code == 2


def test_export_writes_the_predecessor_alerts_json_shape_within_the_window(db):
    result = itap(db, "export", "alerts", "--since", "2026-01-02T05:00", "--until", "2026-01-02T08:00")
    assert result.exit_code == 0
    (row,) = json.loads(result.output)
    assert {k: row[k] for k in ("timestamp", "device_id", "severity", "root_cause", "score", "confidence",
                                "families", "rule_name")} == {
        "timestamp": "2026-01-02 05:31:10", "device_id": "DEV-0001", "severity": "CRITICAL",
        "root_cause": "Bearing wear", "score": 4.2123, "confidence": 0.8,
        "families": [["Vibration", 71.5], ["Temperature", 20.0]], "rule_name": "bearing_wear"}
    assert (row["alert_id"], row["status"]) == ("a1", "resolved")
    assert [r["alert_id"] for r in json.loads(itap(db, "export", "alerts").output)] == ["a1", "a2"]
