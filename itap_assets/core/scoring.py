"""Per-device model lifecycle on feature frames: train on a baseline, keep a registry row, score, explain.

Pure logic: Polars frames and numpy in, Polars frames out. The Dagster steps only choose which rows to read.
"""

from __future__ import annotations

import fnmatch
import json
import pickle
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

import numpy as np
import polars as pl

from itap_assets.core.detector import Detector, Scored, fit_detector
from itap_assets.core.drift import feature_profile
from itap_assets.core.explain import explain_points, explain_schema
from itap_assets.core.thresholds import k_of_n_expr, k_of_n_statistic, pot_threshold_details, quantile_threshold
from itap_assets.settings import ModelSettings

SCORES_SCHEMA = {
    "ts": pl.Datetime("us"),
    "day": pl.Date,
    "device_id": pl.String,
    "score": pl.Float64,
    "threshold": pl.Float64,
    "is_anomaly": pl.Boolean,
    "in_training": pl.Boolean,
    "model_version": pl.Int64,
}


def explanations_schema(families: Sequence[str]) -> dict[str, pl.DataType]:
    """Columns of the explanations table; `family_pct` has one field per family (`explained_families`)."""
    return {"ts": pl.Datetime("us"), "day": pl.Date(), "device_id": pl.String(), "score": pl.Float64(),
            **explain_schema(families)}


class BaselineError(ValueError):
    """A device whose baseline window cannot support a model; the message says what to change."""


def feature_matrix(frame: pl.DataFrame, names: Sequence[str]) -> np.ndarray:
    """float32 matrix in `names` order; NULL becomes NaN (the detector imputes it)."""
    return frame.select(pl.col(n).cast(pl.Float32) for n in names).to_numpy()  # to_numpy turns NULL into NaN


def fit_device_model(
    device_id: str, train: pl.DataFrame, feature_names: Sequence[str], model: ModelSettings
) -> tuple[Detector, dict]:
    """Fit the configured detector on one device's baseline rows and pick its threshold without labels."""
    if train.height < model.min_training_rows:
        span = f", {train['ts'].min()} to {train['ts'].max()}" if train.height else ""
        raise BaselineError(
            f"device {device_id}: only {train.height} baseline rows in the training window "
            f"({describe_training(model)}{span}; warm-up and MAINT rows are not fitted), need at least "
            f"model.min_training_rows={model.min_training_rows}. Widen model.training in the config (or materialize "
            "more days for this device), or lower model.min_training_rows."
        )
    det = fit_detector(feature_matrix(train, feature_names), list(feature_names), kind=model.detector,
                       seed=model.seed, evidence_rows=model.evidence_rows,
                       min_effective_samples=model.min_effective_samples)
    return det, smoothed_threshold(det.baseline_scores, model)


def smoothed_threshold(baseline: np.ndarray, model: ModelSettings) -> dict:
    """The threshold of what pages someone: fitted on the k-of-n statistic of the out-of-fold baseline scores (the
    k-th largest of the last n), because ``k_of_n(s > t) == k_of_n_statistic(s) > t``. A threshold fitted on single
    points would be set by isolated baseline spikes that the smoothing drops anyway, and its promised risk would
    not be the risk of the flags that reach the alerts. The statistic never exceeds the point score, so the point
    threshold holds the smoothed flags to the risk as well: the lower of the two is used (each is extrapolated
    from a short tail; taking the lower removes the worse of two noisy extrapolations, never adding risk)."""
    s = model.smoothing
    t = model.threshold

    def fitted(values: np.ndarray) -> dict:
        if t.method == "pot":
            return pot_threshold_details(values, t.tail_quantile, t.risk)
        return {"method": "quantile", "quantile": t.quantile, "threshold": quantile_threshold(values, t.quantile)}

    point = fitted(baseline)
    if not s:
        return {**point, "fitted_on": "point scores"}
    smooth = fitted(k_of_n_statistic(baseline, s.k, s.n))
    if point["threshold"] < smooth["threshold"]:
        return {**point, "fitted_on": f"point scores (below the {s.k}-of-{s.n} statistic's {smooth['threshold']:.3f})"}
    return {**smooth, "fitted_on": f"{s.k}-of-{s.n} statistic"}


def describe_training(model: ModelSettings) -> str:
    tr = model.training
    if tr.first_days is not None:
        return f"first {tr.first_days} day(s)"
    if tr.first_samples is not None:
        return f"first {tr.first_samples} samples"
    if tr.last_days is not None:
        return f"last {tr.last_days} day(s)"
    return f"{tr.start} to {tr.end}"


def model_record(
    device_id: str,
    version: int,
    det: Detector,
    threshold: dict,
    train: pl.DataFrame,
    model: ModelSettings,
) -> dict:
    """One registry row: everything needed to audit and reuse the model, the model itself as a BLOB."""
    baseline = det.baseline_scores.astype(np.float64)
    stats = {
        "mean": float(baseline.mean()),
        **{f"p{q}": float(np.quantile(baseline, q / 100)) for q in (50, 95, 99)},
        "max": float(baseline.max()),
        "flagged_share": float((baseline > threshold["threshold"]).mean()),
    }
    return {
        "device_id": device_id,
        "version": version,
        "trained_at": datetime.now(timezone.utc).replace(tzinfo=None),
        "detector": det.kind,
        "training_window": describe_training(model),
        "training_start": train["ts"].min(),
        "training_end": train["ts"].max(),
        "rows_used": train.height,
        "exclude_labelled_faults": model.training.exclude_labelled_faults,
        "feature_list": json.dumps(det.feature_names),
        "params": json.dumps(det.params()),
        "threshold": float(threshold["threshold"]),
        "threshold_details": json.dumps(threshold),
        "smoothing": json.dumps(model.smoothing.model_dump() if model.smoothing else None),
        "baseline_stats": json.dumps(stats),
        "feature_profile": json.dumps(feature_profile(feature_matrix(train, det.feature_names), det.feature_names)),
        "model_blob": pickle.dumps(det, protocol=pickle.HIGHEST_PROTOCOL),
    }


# What makes two fits the same model: same data window and rows, same features, parameters and threshold.
MODEL_IDENTITY = ("detector", "training_start", "training_end", "rows_used", "feature_list", "params",
                  "threshold_details", "smoothing")


def same_model(record: Mapping, previous: Mapping | None) -> bool:
    """True when a refit reproduced the registry's newest version exactly (so no new version is needed)."""
    return previous is not None and all(record[k] == previous.get(k) for k in MODEL_IDENTITY)


def latest_models(models: pl.DataFrame) -> dict[str, dict]:
    """The newest version of each device's model, as registry rows keyed by device."""
    latest = models.sort("version").group_by("device_id", maintain_order=True).last()
    return {row["device_id"]: row for row in latest.iter_rows(named=True)}


class PinError(ValueError):
    """A model.pins entry naming a version the device's registry does not hold."""


def pinned_version(device_id: str, pins: Mapping[str, int]) -> tuple[str, int] | None:
    """(pattern, version) of the first pin whose glob matches the device, in file order; None when unpinned."""
    return next(((pattern, v) for pattern, v in pins.items() if fnmatch.fnmatchcase(device_id, pattern)), None)


def scoring_models(models: pl.DataFrame, devices: Sequence[str], pins: Mapping[str, int]
                   ) -> tuple[dict[str, dict], list[str]]:
    """The registry row each device is scored with (its pinned version, else its newest) and the devices that
    have no model yet. A pin to a version the device does not have is a PinError naming device and version."""
    wanted = set(devices)
    rows = models.filter(pl.col("device_id").is_in(wanted)) if models.height else models
    latest = latest_models(rows) if rows.height else {}
    chosen, problems = {}, []
    for device in sorted(wanted & set(latest)):
        pin = pinned_version(device, pins)
        if pin is None:
            chosen[device] = latest[device]
            continue
        versions = rows.filter(pl.col("device_id") == device)
        match = versions.filter(pl.col("version") == pin[1])
        if match.is_empty():
            problems.append(f"device {device} is pinned to model version {pin[1]} (model.pins {pin[0]!r}) but its "
                            f"registry holds version(s) {sorted(versions['version'])}")
        else:
            chosen[device] = match.row(0, named=True)
    if problems:
        raise PinError("; ".join(problems) + ": change model.pins or train that version first")
    return chosen, sorted(wanted - set(latest))


def load_detector(record: Mapping) -> Detector:
    det = pickle.loads(record["model_blob"])
    if not isinstance(det, Detector):
        raise TypeError(f"model blob of {record['device_id']} v{record['version']} is not a Detector")
    return det


def score_device(features: pl.DataFrame, record: Mapping, det: Detector) -> pl.DataFrame:
    """Scores for one device's feature rows (sorted by ts) with the given model version.

    Warm-up rows (less history than the longest window) are scored but never flagged. The evidence window and the
    smoothing (k of the last n points) run over the rows given: the scoring asset passes the rows before a run's
    first partition as context, so a day scores the same in a daily run as in a backfill.
    """
    return _scored_points(features, record, det)[0]


def score_and_explain_device(features: pl.DataFrame, record: Mapping, det: Detector,
                             feature_families: Mapping[str, str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``score_device`` and the explanation of every flagged point (the attribution of the model that flagged it,
    as family percentages and top features), from one pass of the detector over the rows."""
    points, scored = _scored_points(features, record, det)
    flagged = points["is_anomaly"]
    attribution = det.attribution_of(scored.take(np.flatnonzero(flagged.to_numpy())))
    explained = points.filter(flagged).select("ts", "day", "device_id", "score")
    return points, explained.hstack(explain_points(attribution, det.feature_names, feature_families))


def _scored_points(features: pl.DataFrame, record: Mapping, det: Detector) -> tuple[pl.DataFrame, Scored]:
    device = record["device_id"]
    if features.height and (features["device_id"] != device).any():
        raise ValueError(f"model of {device} was asked to score rows of another device")
    scored = det.scored(feature_matrix(features, json.loads(record["feature_list"])))
    score = scored.score
    threshold = float(record["threshold"])
    smoothing = json.loads(record["smoothing"])
    raw_flag = pl.lit(pl.Series(score > threshold)) & ~pl.col("warmup")
    flag = k_of_n_expr(raw_flag, smoothing["k"], smoothing["n"], by=None) if smoothing else raw_flag
    points = features.select(
        "ts",
        "day",
        "device_id",
        pl.Series("score", score, dtype=pl.Float64),
        pl.lit(threshold, dtype=pl.Float64).alias("threshold"),
        flag.alias("is_anomaly"),
        pl.col("ts").is_between(record["training_start"], record["training_end"]).alias("in_training"),
        pl.lit(record["version"], dtype=pl.Int64).alias("model_version"),
    )
    return points, scored
