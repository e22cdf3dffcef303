from datetime import date, datetime, timedelta

import polars as pl

from itap_assets.assets.alerts import rule_points, scored_points
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
    aligned = rule_points(scored_points(s), explanations_of(flagged))
    # the same points whether the explanations come in the flagged points' order or shuffled
    shuffled = rule_points(scored_points(s), explanations_of(flagged).reverse())
    assert aligned.equals(shuffled)
    assert aligned["score"].to_list() == [1.0, 1.5, 2.5]  # relative to the threshold
    assert aligned["top_family"].to_list() == ["Speed", "Temperature", "Temperature"]


def test_rule_points_keep_flagged_points_without_an_explanation():
    s = scores([True, True])
    points = rule_points(scored_points(s), explanations_of(s.head(1)))
    assert points.height == 2
    assert points["top_family"].to_list() == ["Speed", None]


def _store_evidence(p, days: list[date], device: str) -> None:
    """Scores (one a minute) and explanations of one device: flagged from noon of the first day to noon of the last,
    a vibration fault the whole time."""
    from itap_assets import storage
    from itap_assets.core.scoring import SCORES_SCHEMA
    from itap_assets.resources import DB_SCHEMA

    t0 = datetime.combine(days[0], datetime.min.time())
    ts = [t0 + timedelta(minutes=m) for m in range(len(days) * 24 * 60)]
    flagged = [t0 + timedelta(hours=12) <= t < t0 + timedelta(days=len(days) - 1, hours=12) for t in ts]
    frame = pl.DataFrame({"ts": ts, "day": [t.date() for t in ts], "device_id": device,
                          "score": [6.0 if f else 1.0 for f in flagged], "threshold": 2.0, "is_anomaly": flagged,
                          "in_training": False, "model_version": 1}, schema=SCORES_SCHEMA)
    hits = frame.filter("is_anomaly")
    vib = {"vibration_g__rms_mid": "Vibration", "temp_c__mean_mid": "Temperature"}
    explained = hits.select("ts", "day", "device_id", "score").hstack(
        explain_points([[9.0, 1.0]] * hits.height, list(vib), vib))
    storage.replace_partitions(p.db_path, DB_SCHEMA, "scores", frame, None)
    storage.replace_partitions(p.db_path, DB_SCHEMA, "explanations", explained, None)


def test_an_incident_over_two_midnights_is_the_same_from_daily_runs_and_from_one_backfill(make_pipeline):
    """The inputs reach back one day: without the stored evidence of the incident still open, the third day's run
    would start a second incident (new id, wrong start)."""
    from itap_assets.definitions import all_assets

    days = [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)]
    keys = [f"{d.isoformat()}|DEV-0001" for d in days]
    results = {}
    for cut in ("daily", "backfill"):
        p = make_pipeline()
        p.db_path = p.db_path.parent / cut / "itap.duckdb"
        p.register("DEV-0001")
        _store_evidence(p, days, "DEV-0001")
        runs = [(k, k) for k in keys] if cut == "daily" else [(keys[0], keys[-1])]
        for first, last in runs:
            assert p.materialize(all_assets, first=first, last=last, selection=["alerts"]).success
        results[cut] = p.sql("SELECT * EXCLUDE (day) FROM itap.v_alerts WHERE suppressed_by IS NULL")
    daily, backfill = results["daily"], results["backfill"]
    assert backfill.height == 1 and backfill["rule_name"].item() == "bearing_wear"
    assert backfill["start_ts"].item() == datetime(2026, 1, 1, 12, 0)
    assert daily.select("alert_id", "start_ts", "end_ts", "n_events", "rule_name", "status").equals(
        backfill.select("alert_id", "start_ts", "end_ts", "n_events", "rule_name", "status"))
