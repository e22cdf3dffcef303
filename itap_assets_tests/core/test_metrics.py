from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from itap_assets.core.simulator import SIMULATOR_FAULT_TAGS as TAGS
from itap_assets.core.metrics import (
    FaultTags,
    alert_quality,
    detection_metrics,
    fault_episodes,
    fault_free_device_days,
    metrics_frame,
    post_fault_mask,
    root_cause_accuracy,
)

T0 = datetime(2026, 1, 2)


def ts(i: int) -> datetime:
    return T0 + timedelta(seconds=10 * i)


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    """Two devices x 20 rows at 10 s. A: training rows 0-4, bearing_wear rows 8-11, flags at 2 (training), 10,
    11, 15. B: power_spike rows 3-5 (missed), sensor_dropout of temp_c rows 12-16 (NULL then flat), flag at 13."""
    rng = np.random.default_rng(0)
    rows = []
    for dev in ("A", "B"):
        for i in range(20):
            tag = fid = None
            if dev == "A" and 8 <= i <= 11:
                tag, fid = "bearing_wear", "A-F1"
            if dev == "B" and 3 <= i <= 5:
                tag, fid = "power_spike", "B-F1"
            if dev == "B" and 12 <= i <= 16:
                tag, fid = "sensor_dropout", "B-F2"
            temp = float(rng.normal(50, 1))
            if dev == "B" and 12 <= i <= 14:
                temp = None
            elif dev == "B" and 15 <= i <= 16:
                temp = 49.5
            rows.append(
                {
                    "device_id": dev,
                    "ts": ts(i),
                    "day": ts(i).date(),
                    "score": float(rng.normal(0, 1) + (2.0 if fid else 0.0)),
                    "is_anomaly": (dev == "A" and i in (2, 10, 11, 15)) or (dev == "B" and i == 13),
                    "in_training": dev == "A" and i < 5,
                    "fault_tag": tag,
                    "fault_id": fid,
                    "temp_c": temp,
                    "rpm": float(rng.normal(1500, 5)),
                }
            )
    return pl.DataFrame(rows)


def test_point_metrics(frame):
    m = detection_metrics(frame, tags=TAGS)
    o = m["overall"]
    assert o["rows"] == 35 and o["training_rows_excluded"] == 5
    assert o["positives"] == 12 and o["negatives"] == 23 and o["flagged"] == 4
    assert o["precision"] == pytest.approx(3 / 4)
    assert o["recall"] == pytest.approx(3 / 12)
    assert o["f1"] == pytest.approx(2 * 0.75 * 0.25 / 1.0)
    assert o["false_alarm_rate"] == pytest.approx(1 / 23)
    assert o["missed_alarm_rate"] == pytest.approx(9 / 12)
    ev = frame.filter(~pl.col("in_training"))
    y = ev["fault_id"].is_not_null().to_numpy()
    assert o["roc_auc"] == pytest.approx(roc_auc_score(y, ev["score"].to_numpy()))
    assert o["pr_auc"] == pytest.approx(average_precision_score(y, ev["score"].to_numpy()))


def test_episode_metrics(frame):
    m = detection_metrics(frame, tags=TAGS)
    o, per = m["overall"], m["by_fault_type"]
    assert o["episodes"] == 3 and o["episodes_detected"] == 2
    assert o["critical_episodes"] == 2 and o["critical_episode_recall"] == pytest.approx(0.5)
    assert per["bearing_wear"]["point_recall"] == pytest.approx(0.5)
    assert per["bearing_wear"]["median_delay_s"] == pytest.approx(20.0)
    assert per["power_spike"]["episode_recall"] == 0.0 and per["power_spike"]["median_delay_s"] is None
    assert per["sensor_dropout"]["point_recall"] == pytest.approx(1 / 5)


def test_post_fault_rows_are_found_per_device_whatever_the_row_order():
    # given two devices whose rows interleave in time, each with an episode ending at a different time
    t0 = datetime(2026, 1, 1)
    rows = [("A", 0, "a1"), ("B", 0, None), ("A", 10, None), ("B", 10, "b1"), ("A", 20, None), ("B", 20, None),
            ("B", 50, None), ("A", 50, None)]
    frame = pl.DataFrame({"device_id": [r[0] for r in rows], "ts": [t0 + timedelta(seconds=r[1]) for r in rows],
                          "fault_id": [r[2] for r in rows]})
    # then a fault-free row counts when its own device's episode ended at most 25 s before it
    assert post_fault_mask(frame, 25.0).tolist() == [False, False, True, False, True, True, False, False]


def test_post_fault_grace_reports_extra_keys_only(frame):
    plain = detection_metrics(frame, tags=TAGS)["overall"]
    graced = detection_metrics(frame, post_fault_grace_s=30.0, tags=TAGS)["overall"]
    assert graced["false_alarm_rate"] == plain["false_alarm_rate"]
    assert graced["post_fault_rows"] == 9 and graced["post_fault_flagged"] == 0
    assert graced["false_alarm_rate_excl_post_fault"] == pytest.approx(1 / 14)
    mask = post_fault_mask(frame, 30.0)
    a = frame.with_columns(post=pl.Series(mask)).filter(pl.col("post"))
    assert sorted(zip(a["device_id"], a["ts"])) == sorted(
        [("A", ts(i)) for i in (12, 13, 14)] + [("B", ts(i)) for i in (6, 7, 8, 17, 18, 19)]
    )


def test_undefined_metrics_are_none():
    df = pl.DataFrame(
        {
            "device_id": ["A"] * 3,
            "ts": [ts(i) for i in range(3)],
            "score": [0.1, 0.2, None],
            "is_anomaly": [False, None, True],
            "fault_tag": [None, None, None],
            "fault_id": pl.Series([None, None, None], dtype=pl.Utf8),
        }
    )
    o = detection_metrics(df, tags=TAGS)["overall"]
    assert o["roc_auc"] is None and o["recall"] is None and o["episodes"] == 0
    assert o["false_alarm_rate"] == pytest.approx(1 / 3) and o["unscored_rows"] == 1


def test_fault_episodes(frame):
    eps = fault_episodes(frame.drop("score", "is_anomaly", "in_training"))
    got = {r["fault_id"]: r for r in eps.iter_rows(named=True)}
    assert set(got) == {"A-F1", "B-F1", "B-F2"}
    assert got["A-F1"]["start_ts"] == ts(8) and got["A-F1"]["end_ts"] == ts(11) and got["A-F1"]["n_points"] == 4


def test_root_cause_accuracy():
    """A sensor dropout's right root cause is DataQuality (an instrumentation problem), not the dropped sensor's
    family."""
    explained = pl.DataFrame(
        {
            "device_id": ["A", "A", "A", "A", "B", "B"],
            "fault_id": ["A-F1", "A-F1", "A-F1", None, "B-F2", "B-F2"],
            "fault_tag": ["bearing_wear"] * 3 + [None, "sensor_dropout", "sensor_dropout"],
            "top_family": ["Vibration", "Vibration", "Temperature", "Voltage", "DataQuality", "Temperature"],
        }
    )
    r = root_cause_accuracy(explained, tags=TAGS)
    assert r["overall"]["points"] == 5 and r["overall"]["accuracy"] == pytest.approx(3 / 5)
    assert r["overall"]["episodes"] == 2
    assert r["by_fault_type"]["bearing_wear"]["accuracy"] == pytest.approx(2 / 3)
    assert r["by_fault_type"]["sensor_dropout"]["accuracy"] == pytest.approx(1 / 2)


def test_root_cause_leaves_out_faults_whose_family_is_unknown():
    explained = pl.DataFrame({
        "device_id": ["A", "A", "A"], "fault_id": ["A-F1", "A-F1", "A-F2"],
        "fault_tag": ["bearing_wear", "bearing_wear", "fault"],  # a generic tag from a plant's files
        "top_family": ["Vibration", "Temperature", "Voltage"],
    })
    r = root_cause_accuracy(explained, tags=TAGS)["overall"]
    assert r["accuracy"] == pytest.approx(1 / 2) and r["points"] == 2
    assert r["points_unknown_family"] == 1 and r["episodes_unknown_family"] == 1


def _alerts(**columns) -> pl.DataFrame:
    n = len(columns["alert_id"])
    base = {"severity": ["WARNING"] * n, "rule_name": ["bearing_wear"] * n, "route": ["maintenance"] * n,
            "suppressed_by": [None] * n}
    return pl.DataFrame({**base, **columns}, schema_overrides={"suppressed_by": pl.Utf8})


def test_alert_quality(frame):
    eps = fault_episodes(frame)
    alerts = _alerts(
        alert_id=["a1", "a2", "a3", "a4"],
        device_id=["A", "A", "B", "B"],
        start_ts=[ts(9), ts(15), ts(2), ts(10)],
        end_ts=[ts(12), ts(16), ts(4), ts(13)],
        suppressed_by=[None, None, "min_events:3", None],
    )
    q = alert_quality(alerts, eps, fault_free_device_days=2, flagged_points=4, tags=TAGS)
    o = q["overall"]
    assert o["episodes"] == 3 and o["episodes_alerted"] == 2
    assert o["critical_episodes"] == 2 and o["critical_episodes_alerted"] == 1
    assert o["active_alerts"] == 3 and o["suppressed_alerts"] == 1
    assert o["alert_precision"] == pytest.approx(2 / 3)
    assert o["false_alerts_per_fault_free_device_day"] == pytest.approx(0.5)
    assert o["alerts_per_flagged_point"] == pytest.approx(3 / 4)
    assert o["median_time_to_alert_s"] == pytest.approx(5.0)  # 10 s (A-F1) and 0 s (B-F2: alert already open)
    assert q["by_fault_type"]["power_spike"]["episodes_alerted"] == 0


def test_alert_quality_grades_what_the_operator_reads(frame):
    """One incident per episode, routed to the fault's team, with a cause naming the fault's family; two incidents
    for one fault are wrong however they are routed."""
    eps = fault_episodes(frame)
    families = {"bearing_wear": ("Vibration",), "overheating": ("Temperature",), "sensor_data_quality": ("DataQuality",)}
    right = _alerts(alert_id=["a1", "b1"], device_id=["A", "B"], start_ts=[ts(8), ts(12)], end_ts=[ts(11), ts(16)],
                    rule_name=["bearing_wear", "sensor_data_quality"], route=["maintenance", "instrumentation"])
    o = alert_quality(right, eps, 2, 4, tags=TAGS, rule_families=families)["overall"]
    # B-F1 (power_spike) has no incident: not single, route and cause wrong
    assert o["episode_single_incident"] == pytest.approx(2 / 3)
    assert o["episode_route_accuracy"] == pytest.approx(2 / 3) and o["episode_cause_accuracy"] == pytest.approx(2 / 3)
    wrong = _alerts(alert_id=["a1", "a2", "b1"], device_id=["A", "A", "B"], start_ts=[ts(8), ts(10), ts(12)],
                    end_ts=[ts(9), ts(11), ts(16)], rule_name=["bearing_wear", "bearing_wear", "overheating"],
                    route=["maintenance", "maintenance", "maintenance"])
    q = alert_quality(wrong, eps, 2, 4, tags=TAGS, rule_families=families)
    assert q["by_fault_type"]["bearing_wear"]["episode_single_incident"] == 0.0  # two incidents for one fault
    assert q["by_fault_type"]["bearing_wear"]["episode_route_accuracy"] == 0.0
    assert q["by_fault_type"]["sensor_dropout"]["episode_route_accuracy"] == 0.0  # a dropout paged as a machine fault
    assert q["by_fault_type"]["sensor_dropout"]["episode_cause_accuracy"] == 0.0


def test_fault_free_device_days_and_long_frame(frame):
    assert fault_free_device_days(frame) == 0
    assert fault_free_device_days(frame.with_columns(fault_id=pl.lit(None, pl.Utf8))) == 2
    long = metrics_frame(detection_metrics(frame, tags=TAGS), family="detection")
    assert long.columns == ["metric", "scope", "value"]
    assert long.schema["value"] == pl.Float64
    got = {(r["metric"], r["scope"]): r["value"] for r in long.iter_rows(named=True)}
    assert got[("detection.precision", "all")] == pytest.approx(0.75)
    assert got[("detection.episode_recall", "fault_type=power_spike")] == 0.0
    assert got[("detection.median_delay_s", "fault_type=power_spike")] is None


def test_labels_mean_what_the_config_says(frame):
    """Any tag works: without a family it is detected and alerted but its root cause is not graded; the critical
    tags come from the config, not from the simulator's names."""
    generic = FaultTags()
    m = detection_metrics(frame, tags=generic)["overall"]
    assert m["critical_episodes"] == m["episodes"]  # every tag critical when none is named
    eps = fault_episodes(frame)
    assert alert_quality(_alerts(alert_id=["a1"], device_id=["A"], start_ts=[ts(8)], end_ts=[ts(11)]), eps, 2, 4,
                         tags=generic)["overall"]["episode_route_accuracy"] is None  # no routes named: not graded
    only = FaultTags(critical=("power_spike",), families={"power_spike": ("Voltage",)})
    assert detection_metrics(frame, tags=only)["overall"]["critical_episodes"] == \
        eps.filter(pl.col("fault_tag") == "power_spike").height
