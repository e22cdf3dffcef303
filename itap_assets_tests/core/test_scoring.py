"""The per-device model lifecycle on simulated features: an anomaly injected into one sensor is flagged and
blamed on that sensor's family."""

import numpy as np
import polars as pl
import pytest

from itap_assets.core.explain import feature_family_map
from itap_assets.core.features import device_day_features, feature_registry
from itap_assets.core.scoring import (
    fit_device_model, model_record, score_and_explain_device, score_device, smoothed_threshold,
)
from itap_assets.core.thresholds import k_of_n, pot_threshold
from itap_assets.core.simulator import simulate_fleet
from itap_assets.settings import ModelSettings, SimulationSettings

SIM = SimulationSettings(devices=1, days=2, sample_interval_s=30, healthy_days=2, seed=5)
FAMILIES = {"temp_c": "Temperature", "vibration_g": "Vibration", "voltage_v": "Voltage", "current_a": "Current",
            "rpm": "RPM"}


@pytest.mark.parametrize(("sensor", "shift", "family"), [
    ("voltage_v", 35.0, "Voltage"),
    ("vibration_g", 1.5, "Vibration"),
    ("temp_c", 20.0, "Temperature"),
])
def test_an_anomaly_injected_into_one_sensor_is_blamed_on_its_family(sensor, shift, family):
    raw = simulate_fleet(SIM)
    day2 = raw["day"].unique().sort()[1]
    window = (pl.col("day") == day2) & (pl.col("ts").dt.hour() == 12) & (pl.col("state") == "RUN")
    injected = raw.with_columns(pl.when(window).then(pl.col(sensor) + shift).otherwise(pl.col(sensor)).alias(sensor))
    feats = device_day_features(injected, FAMILIES)
    names = [s.name for s in feature_registry(FAMILIES)]
    model = ModelSettings(training={"first_days": 1})
    train = feats.filter((pl.col("day") != day2) & (pl.col("state") != "MAINT") & ~pl.col("warmup"))
    det, threshold = fit_device_model("DEV-0001", train, names, model)
    record = model_record("DEV-0001", 1, det, threshold, train, model)
    scored, explained = score_and_explain_device(feats, record, det,
                                                 feature_family_map(feature_registry(FAMILIES)))
    assert scored.equals(score_device(feats, record, det))
    flagged = scored.with_columns(injected.select(window.alias("injected"))).filter("is_anomaly")
    assert flagged.height > 0
    assert flagged["injected"].mean() > 0.5  # most flags are the injected stretch
    assert explained.select("ts", "score").equals(flagged.select("ts", "score"))  # every flagged point, explained
    explained = explained.join(flagged.filter("injected").select("ts"), on="ts")
    # The blamed family is the injected sensor's for the clear majority of points (a step in one sensor also
    # breaks its correlation with a physically coupled one, e.g. temperature with current, which takes a share).
    counts = explained["top_family"].value_counts(sort=True)
    assert counts["top_family"][0] == family, counts
    assert (explained["top_family"] == family).mean() >= 0.8, counts


def test_the_threshold_is_fitted_on_the_smoothed_statistic():
    rng = np.random.default_rng(7)
    # autocorrelated baseline scores with isolated spikes that k-of-n removes
    base = np.convolve(rng.exponential(size=60_000), np.ones(5) / 5, mode="same")
    base[rng.choice(base.size, 60, replace=False)] += 20.0
    model = ModelSettings(threshold={"risk": 1e-3}, smoothing={"k": 2, "n": 3})
    smooth = smoothed_threshold(base, model)
    assert smooth["fitted_on"] == "2-of-3 statistic"
    assert smooth["threshold"] < pot_threshold(base, risk=1e-3)  # isolated spikes no longer set the threshold
    fresh = np.convolve(rng.exponential(size=60_000), np.ones(5) / 5, mode="same")
    assert k_of_n(fresh > smooth["threshold"], 2, 3).mean() < 5e-3


def test_a_short_baseline_still_extrapolates_its_tail():
    rng = np.random.default_rng(3)
    short = rng.exponential(size=340)  # 7 points above the 98th percentile: too few for a tail fit there
    details = smoothed_threshold(short, ModelSettings(smoothing=None))
    assert details["method"] == "gpd" and details["tail_quantile"] < 0.98
    assert details["threshold"] > short.max()  # a 1e-4 risk lies beyond the largest of 340 points


def test_the_smoothed_threshold_is_never_above_the_point_threshold():
    from itap_assets.core.thresholds import k_of_n_statistic, pot_threshold_details

    model = ModelSettings()
    for seed in range(20):
        base = np.random.default_rng(seed).pareto(3.0, size=400)  # short, heavy-tailed: noisy extrapolations
        point = pot_threshold_details(base, 0.98, model.threshold.risk)["threshold"]
        smooth = pot_threshold_details(k_of_n_statistic(base, 2, 3), 0.98, model.threshold.risk)["threshold"]
        assert smoothed_threshold(base, model)["threshold"] == min(point, smooth)
