"""Detection at any sample rate with project defaults (`features.windows: auto`, the shipped alert rules): a step of
a few baseline standard deviations on one sensor lasting tens of minutes is alerted and blamed on that sensor's
family; an equally long fault-free continuation of the baseline process gets no alert; scores grow strictly with
the size of a deviation; no feature column of the device is all-NULL. Synthetic data, no dataset needed."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from itap_assets.assets.alerts import rule_points, scored_points
from itap_assets.core.explain import feature_family_map
from itap_assets.core.features import device_day_features, model_feature_specs
from itap_assets.core.alerting import DEFAULT_FAMILIES, evaluate_alerts, load_alert_rules
from itap_assets.core.scoring import feature_matrix, fit_device_model, model_record, score_and_explain_device
from itap_assets.core.windows import feature_windows
from itap_assets.settings import PROJECT_ROOT, Settings

FAMILIES = {"temp_c": "Temperature", "vibration_g": "Vibration", "current_a": "Current"}
STEP_SIGMA = 4.0
RULES = load_alert_rules(PROJECT_ROOT / "configs" / "alert_rules.yaml", DEFAULT_FAMILIES)


def telemetry(dt_s: int, rows: int, seed: int) -> pl.DataFrame:
    """Three coupled sensors: a shared slow load (AR(1)) plus each sensor's own AR(1) noise."""
    rng = np.random.default_rng(seed)

    def ar1(n: int, phi: float) -> np.ndarray:
        e = rng.normal(size=n) * np.sqrt(1 - phi * phi)
        out = np.empty(n)
        out[0] = e[0]
        for i in range(1, n):
            out[i] = phi * out[i - 1] + e[i]
        return out

    load = ar1(rows, 0.95)
    ts = [datetime(2026, 3, 1) + timedelta(seconds=dt_s * i) for i in range(rows)]
    return pl.DataFrame({
        "ts": ts, "device_id": "RIG-1", "state": "RUN",
        "temp_c": 60 + 3 * load + ar1(rows, 0.8),
        "vibration_g": 2 + 0.3 * load + 0.2 * ar1(rows, 0.5),
        "current_a": 40 + 4 * load + ar1(rows, 0.7),
    }).with_columns(pl.col("ts").cast(pl.Datetime("us")), day=pl.col("ts").dt.date())


@pytest.mark.parametrize(("dt_s", "baseline"), [(1, 3600), (10, 1500), (60, 1000), (300, 400)])
def test_a_step_on_one_sensor_is_alerted_and_blamed_on_its_family_at_any_rate(dt_s, baseline):
    span = max(40 * 60 // dt_s, 8)  # forty minutes (eight samples at 5 min)
    tele = telemetry(dt_s, baseline + 2 * span, seed=dt_s)
    normal = slice(baseline, baseline + span)
    step = slice(baseline + span, baseline + 2 * span)
    sd = tele["vibration_g"][:baseline].std()
    vib = tele["vibration_g"].to_numpy().copy()
    vib[step] += STEP_SIGMA * sd
    tele = tele.with_columns(pl.Series("vibration_g", vib))

    settings = Settings(source="simulation", sensors={s: {"family": f, "min": -1e6, "max": 1e6}
                                                      for s, f in FAMILIES.items()},
                        model={"training": {"first_samples": baseline}})
    specs = model_feature_specs(settings)
    names = [s.name for s in specs]
    feats = device_day_features(tele, FAMILIES, feature_windows(settings))
    assert [c for c in names if feats[c].null_count() == feats.height] == []  # no all-NULL feature column
    train = feats[:baseline].filter(~pl.col("warmup"))
    assert train.height >= 0.9 * baseline  # the warm-up never swallows the baseline
    det, threshold = fit_device_model("RIG-1", train, names, settings.model)
    record = model_record("RIG-1", 1, det, threshold, train, settings.model)
    points, explained = score_and_explain_device(feats, record, det, feature_family_map(specs))
    alerts = evaluate_alerts(rule_points(scored_points(points, RULES.defaults), explained), RULES).filter(
        pl.col("suppressed_by").is_null())

    t = tele["ts"]
    in_normal = alerts.filter(pl.col("start_ts").is_between(t[normal.start], t[normal.stop - 1]))
    assert in_normal.height == 0, in_normal.select("start_ts", "cause", "max_score")
    on_step = alerts.filter((pl.col("start_ts") <= t[step.stop - 1]) & (pl.col("end_ts") >= t[step.start]))
    assert on_step.height >= 1, f"no alert on the step: max score {points['score'][step].max():.2f} " \
                                f"vs threshold {threshold['threshold']:.2f}"
    top = [max(json.loads(f), key=json.loads(f).get) for f in on_step["families"]]
    assert top[0] == "Vibration", on_step.select("cause", "families")

    # further from normal always scores higher, without bound
    row = feature_matrix(feats[baseline - 1:baseline], names)
    j = names.index("vibration_g__mean_short")
    z = det.prep.scale_continuous(row)[0]
    sizes = np.array([3, 10, 30, 100, 300])
    rows = np.repeat(row, sizes.size, axis=0)
    rows[:, j] += sizes * train["vibration_g__mean_short"].std()
    scores = np.array([det.score(r[None, :])[0] for r in rows])
    assert np.all(np.isfinite(z)) and np.all(np.diff(scores) > 0) and scores[-1] > 50
