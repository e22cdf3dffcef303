"""The whole graph on a small fleet, built once for this module: model registry, scores, explanations,
summaries, alerts and metrics as a user reads them from the DuckDB file."""

import json
import pickle

import dagster as dg
import polars as pl
import pytest

from itap_assets.assets.model import baseline_status_of, training_window_reader
from itap_assets.core.scoring import BaselineError, score_device
from itap_assets.definitions import all_assets
from itap_assets.settings import TrainingWindow
from itap_assets_tests.conftest import Pipeline, run_graph, write_config

DEVICES = ["DEV-0001", "DEV-0002", "DEV-0003"]
DAYS = ["2026-01-01", "2026-01-02"]
CONFIG = {"simulation": {"devices": 3, "days": 2, "sample_interval_s": 60, "fault_rate": 3.0, "seed": 3}}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Pipeline:
    root = tmp_path_factory.mktemp("graph")
    p = Pipeline(write_config(root / "itap.yaml", CONFIG), root / "itap.duckdb", dg.DagsterInstance.ephemeral())
    results = run_graph(p, DEVICES, DAYS)
    assert all(r.success for r in results)
    yield p
    p.instance.dispose()


def test_the_registry_has_one_row_per_device_with_everything_needed_to_audit_it(built):
    reg = built.sql("SELECT * FROM itap.model ORDER BY device_id")
    assert reg["device_id"].to_list() == DEVICES
    assert reg["version"].to_list() == [1, 1, 1]
    assert (reg["rows_used"] > 500).all()
    assert reg["training_window"].unique().to_list() == ["first 1 day(s)"]
    assert (reg["training_start"].dt.date().cast(pl.String) == DAYS[0]).all()
    assert (reg["training_end"].dt.date().cast(pl.String) == DAYS[0]).all()
    features = json.loads(reg["feature_list"][0])
    assert len(features) >= 60
    assert json.loads(reg["params"][0])["kind"] == "pca"
    assert (reg["threshold"] > 0).all()
    assert all(pickle.loads(blob).feature_names == features for blob in reg["model_blob"])


def test_every_point_is_scored_once_with_training_rows_marked(built):
    scores = built.table("scores")
    assert scores.height == len(DEVICES) * len(DAYS) * 1440
    assert scores.select(pl.struct("device_id", "ts").is_unique().all()).item()
    in_training_days = scores.filter("in_training")["day"].cast(pl.String).unique().to_list()
    assert in_training_days == [DAYS[0]]
    assert (scores["model_version"] == 1).all()


@pytest.mark.parametrize("window", [{"first_days": 1}, {"first_samples": 2000},
                                    {"first_samples": 2000, "exclude_labelled_faults": True}])
def test_training_rows_are_each_devices_window_and_nothing_else(built, window):
    settings = built.settings
    settings = settings.model_copy(update={"model": settings.model.model_copy(
        update={"training": TrainingWindow(**window)})})
    names = ["temp_c__mean_short", "rpm__mean_short"]  # features.windows: auto (the default)
    with built.resources()["warehouse"].session() as session:
        windows = baseline_status_of(session, settings, DEVICES[:2]).select("device_id", "start", "end")
        read = training_window_reader(session, settings, names)
        got = pl.concat([read(*window) for window in windows.iter_rows()])
    # first_samples: N = the device's first N samples as they arrived (beyond day 1: faults are labelled there)
    first_n = pl.col("sample") <= 2000
    eligible = (built.table("features").sort("device_id", "ts")
                .with_columns(sample=pl.col("ts").rank("ordinal").over("device_id"))
                .join(built.table("validated").select("device_id", "ts", "fault_tag"), on=["device_id", "ts"])
                .filter((pl.col("state") != "MAINT") & ~pl.col("warmup") & pl.col("device_id").is_in(DEVICES[:2]))
                .sort("device_id", "ts"))
    if window.get("exclude_labelled_faults"):
        assert eligible.filter(first_n)["fault_tag"].is_not_null().any()
        eligible = eligible.filter(pl.col("fault_tag").is_null())
    expected = eligible.filter(pl.col("day").cast(pl.String) == DAYS[0]) if "first_days" in window else \
        eligible.filter(first_n)
    assert got.columns == ["ts", "day", "device_id", "state", *names]
    assert got.select("device_id", "ts", *names).equals(expected.select("device_id", "ts", *names))


def test_each_device_is_scored_by_its_own_model(built):
    reg = built.sql("SELECT * FROM itap.model").rows_by_key("device_id", named=True, unique=True, include_key=True)
    features = built.table("features")
    scores = built.table("scores")
    for device in DEVICES:
        rows = features.filter(pl.col("device_id") == device)
        mine = score_device(rows, reg[device], pickle.loads(reg[device]["model_blob"]))
        stored = scores.filter(pl.col("device_id") == device).sort("ts")
        assert mine.sort("ts")["score"].to_list() == pytest.approx(stored["score"].to_list())
    other = reg["DEV-0002"]
    with pytest.raises(ValueError, match="model of DEV-0002 was asked to score rows of another device"):
        score_device(features.filter(pl.col("device_id") == "DEV-0001"), other, pickle.loads(other["model_blob"]))


def test_explanations_cover_every_flagged_point_and_sum_to_100(built):
    flagged = built.sql("SELECT count(*) AS n FROM itap.scores WHERE is_anomaly")["n"][0]
    expl = built.table("explanations")
    assert expl.height == flagged > 0
    shares = expl["family_pct"].drop_nulls().struct.unnest().select(pl.sum_horizontal(pl.all())).to_series()
    assert shares.len() > 0 and shares.to_list() == pytest.approx([100.0] * shares.len(), abs=0.1)
    assert expl["top_features"].drop_nulls().list.len().max() <= 5


def test_device_summaries_agree_with_scores(built):
    summaries = built.table("device_summaries")
    assert summaries.height == len(DEVICES) * len(DAYS)
    check = built.sql(
        "SELECT day, device_id, count(*) AS points, count(*) FILTER (WHERE is_anomaly) AS flagged, max(score) AS mx "
        "FROM itap.scores GROUP BY ALL ORDER BY device_id, day"
    )
    joined = summaries.join(check, on=["day", "device_id"])
    assert (joined["points"] == joined["points_right"]).all()
    assert (joined["flagged"] == joined["flagged_right"]).all()
    assert joined["max_score"].to_list() == pytest.approx(joined["mx"].to_list())
    assert summaries["health"].is_between(0, 100).all()
    second_day = summaries.filter(pl.col("day").cast(pl.String) == DAYS[1])
    assert second_day["health_change"].null_count() == 0


def test_alerts_are_incidents_with_owner_cause_and_action(built):
    alerts = built.sql("SELECT * FROM itap.v_alerts")
    flagged = built.sql("SELECT count(*) AS n FROM itap.scores WHERE is_anomaly")["n"][0]
    assert 0 < alerts.height < flagged
    assert alerts["alert_id"].is_unique().all()
    assert set(alerts["severity"]) <= {"INFO", "WARNING", "CRITICAL"}
    assert alerts["route"].null_count() == 0 and alerts["action"].null_count() == 0
    assert (alerts["end_ts"] >= alerts["start_ts"]).all()


def test_alerts_are_one_incident_per_device_at_a_time_with_a_status(built):
    alerts = built.sql("SELECT * FROM itap.v_alerts ORDER BY device_id, start_ts")
    assert set(alerts["status"]) <= {"firing", "resolved"} and alerts["status"].null_count() == 0
    assert alerts["confidence"].is_between(0, 1).all()
    # incidents of one device never overlap: overlapping evidence is one incident
    overlaps = alerts.with_columns(prev_end=pl.col("end_ts").shift(1).over("device_id")).filter(
        pl.col("prev_end") >= pl.col("start_ts"))
    assert overlaps.height == 0


def test_health_counts_the_days_incidents_and_separates_devices_with_different_counts(built):
    summaries = built.table("device_summaries")
    counts = built.sql(
        "SELECT day, device_id, count(*) FILTER (WHERE severity = 'CRITICAL') AS c, "
        "count(*) FILTER (WHERE severity = 'WARNING') AS w, count(*) FILTER (WHERE severity = 'INFO') AS i "
        "FROM itap.alerts WHERE suppressed_by IS NULL GROUP BY ALL")
    joined = summaries.join(counts, on=["day", "device_id"], how="left").with_columns(
        pl.col("c", "w", "i").fill_null(0))
    assert joined.select((pl.col("critical_incidents") == pl.col("c")) & (pl.col("warning_incidents") == pl.col("w"))
                         & (pl.col("info_incidents") == pl.col("i"))).to_series().all()
    by_counts = joined.group_by("c", "w", "i").agg(pl.col("health"))
    healths = [h for group in by_counts["health"] for h in set(group)]
    assert len(healths) == len(set(healths))  # no health shared across different incident counts


def test_fleet_summary_ranks_devices_per_day(built):
    fleet = built.table("fleet_summary")
    assert fleet["day"].cast(pl.String).to_list() == DAYS
    ranking = json.loads(fleet["ranking"][1])
    assert [d for d, _ in ranking] and sorted(d for d, _ in ranking) == DEVICES
    assert [h for _, h in ranking] == sorted(h for _, h in ranking)


def test_detection_metrics_are_stored_as_a_table(built):
    metrics = built.table("detection_metrics")
    names = set(metrics["metric"])
    for metric in ("detection.roc_auc", "detection.false_alarm_rate", "root_cause.accuracy",
                   "alerts.alert_precision", "alerts.alerts_per_flagged_point", "alerts.episode_single_incident",
                   "alerts.episode_route_accuracy", "alerts.episode_cause_accuracy"):
        assert metric in names


def test_operator_views_exist(built):
    assert built.sql("SELECT count(*) AS n FROM itap.v_device_health")["n"][0] == len(DEVICES)
    dq = built.sql("SELECT * FROM itap.v_data_quality")
    assert dq.height == len(DEVICES) * len(DAYS)


def test_rematerializing_scoring_gives_the_same_alert_ids(built):
    before = built.sql("SELECT alert_id FROM itap.alerts ORDER BY alert_id")
    built.materialize(all_assets, first=f"{DAYS[0]}|{DEVICES[0]}", last=f"{DAYS[-1]}|{DEVICES[-1]}",
                      selection=["scores", "explanations", "device_summaries", "alerts"])
    assert built.sql("SELECT alert_id FROM itap.alerts ORDER BY alert_id").equals(before)


def test_a_day_scored_alone_equals_the_same_day_of_one_run_over_both_days(built):
    """The evidence window and the k-of-n smoothing look back across midnight: the second day scored in a run of its
    own (a daily run) gives the rows the two-day run gave, flags and explanations included."""
    query = "SELECT * FROM itap.{} WHERE day = DATE '2026-01-02' ORDER BY device_id, ts"
    before = {t: built.sql(query.format(t)) for t in ("scores", "explanations")}
    for device in DEVICES:
        built.materialize(all_assets, first=f"{DAYS[1]}|{device}", selection=["scores", "explanations"])
    for table, rows in before.items():
        assert built.sql(query.format(table)).equals(rows), table


def test_explanations_alone_are_rebuilt_from_the_same_scores_without_rewriting_them(built):
    # given the stored scores and explanations of the whole run
    scores_written = built.instance.get_latest_materialization_event(dg.AssetKey("scores")).timestamp
    before = built.sql("SELECT * FROM itap.explanations ORDER BY device_id, ts")
    # when only explanations are materialized again
    built.materialize(all_assets, first=f"{DAYS[0]}|{DEVICES[0]}", last=f"{DAYS[-1]}|{DEVICES[-1]}",
                      selection=["explanations"])
    # then they equal the previous ones, and scores were not written
    assert built.sql("SELECT * FROM itap.explanations ORDER BY device_id, ts").equals(before)
    assert built.instance.get_latest_materialization_event(dg.AssetKey("scores")).timestamp == scores_written


def test_an_identical_refit_keeps_the_version(built):
    before = built.sql("SELECT * EXCLUDE (model_blob) FROM itap.model ORDER BY device_id, version")
    built.materialize(all_assets, first=DEVICES[0], last=DEVICES[-1], selection=["model"])
    assert built.sql("SELECT * EXCLUDE (model_blob) FROM itap.model ORDER BY device_id, version").equals(before)


def test_retraining_adds_a_version_and_scores_name_the_version_used(built):
    retrain = {**CONFIG, "model": {"training": {"start": f"{DAYS[0]}T06:00:00", "end": f"{DAYS[1]}T00:00:00"}}}
    write_config(built.config_path, retrain)
    built.materialize(all_assets, first="DEV-0001", selection=["model"])
    write_config(built.config_path, CONFIG)
    reg = built.sql("SELECT device_id, version, training_window FROM itap.model ORDER BY device_id, version")
    assert reg.filter(pl.col("device_id") == "DEV-0001")["version"].to_list() == [1, 2]
    assert reg["training_window"][1].startswith("2026-01-01 06:00:00 to")
    assert reg.filter(pl.col("device_id") == "DEV-0002")["version"].to_list() == [1]
    built.materialize(all_assets, first=f"{DAYS[1]}|DEV-0001", last=f"{DAYS[1]}|DEV-0002", selection=["scores"])
    used = built.sql(f"SELECT device_id, min(model_version) AS v FROM itap.scores WHERE day = '{DAYS[1]}' "
                     "GROUP BY ALL ORDER BY device_id")
    assert used.rows() == [("DEV-0001", 2), ("DEV-0002", 1), ("DEV-0003", 1)]


def test_a_device_without_enough_baseline_rows_gets_an_actionable_error(make_pipeline):
    p = make_pipeline({"simulation": {"devices": 1, "days": 1, "sample_interval_s": 600},
                       "model": {"training": {"first_samples": 50}, "min_training_rows": 100}})
    with pytest.raises(BaselineError, match=r"DEV-0001: only \d+ baseline rows.*first 50 samples.*min_training_rows"):
        run_graph(p, ["DEV-0001"], ["2026-01-01"], until="training_job")


def test_feature_drift_check_names_drifted_features_and_passes_the_baseline(built):
    from itap_assets.assets.features import baseline_profiles, drift_check_result, drift_rows
    from itap_assets.resources import Warehouse

    profiles = baseline_profiles(Warehouse(database=str(built.db_path)))
    baseline_day = built.table("features").filter(
        (pl.col("device_id") == "DEV-0001") & (pl.col("day").cast(pl.String) == DAYS[0]))
    assert drift_check_result(drift_rows(baseline_day, profiles)).passed
    # a hotter, harder-working machine: the level features of temperature and current shift (10 of 84 features)
    levels = [c for c in baseline_day.columns
              if c.split("__")[0] in ("temp_c", "current_a") and c.split("__")[1].split("_")[0] in ("mean", "min", "max")]
    hotter = baseline_day.with_columns(pl.col(c) + 40 for c in levels)
    drifted = drift_check_result(drift_rows(hotter, profiles))
    assert not drifted.passed
    assert "temp_c__mean_" in drifted.metadata["drifting_device_days"].value


def test_feature_drift_runs_as_a_check_of_the_stored_features(built):
    result = built.materialize(all_assets, first=f"{DAYS[1]}|DEV-0001", last=f"{DAYS[1]}|DEV-0003",
                               selection=dg.AssetSelection.checks_for_assets("features"))
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == "feature_drift"
    assert evaluation.metadata["device_days_checked"].value == 3
