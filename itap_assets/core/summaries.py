"""Device-day and fleet-day summaries: how bad, what kind, better or worse than yesterday.

Health (0–100, higher is healthier) is deliberately simple enough to explain on a shift handover:
`(100 − 25·(1 − e^(−flagged_share / 5%)) − 25·(1 − e^(−(max_score / threshold − 1) / 2))) / (1 + incidents)`,
where `incidents` = 9·CRITICAL + 3·WARNING + 1·INFO active incidents of the day. The numerator (50–100) takes up
to a quarter each for how much of the day was anomalous and how far the worst point went past its threshold, and
never saturates (a saturating term made the worst devices tie at 0); the divisor ranks the incidents first, so a
device without incidents is above 50, one with any is below, and more or worse incidents rank lower (four
critical incidents: at most 2.7; one warning: at least 12.5).
"""

from __future__ import annotations

import json

import polars as pl

FLAGGED_SHARE_SCALE = 0.05  # the scale of each term: e^-1 of its quarter is left at a 5 % flagged share ...
EXCESS_SCALE = 2.0          # ... and at a worst point 3x the threshold
INCIDENT_WEIGHT = {"CRITICAL": 9.0, "WARNING": 3.0, "INFO": 1.0}

DEVICE_SUMMARY_SCHEMA = {
    "day": pl.Date,
    "device_id": pl.String,
    "points": pl.Int64,
    "flagged": pl.Int64,
    "flagged_share": pl.Float64,
    "mean_score": pl.Float64,
    "p95_score": pl.Float64,
    "max_score": pl.Float64,
    "threshold": pl.Float64,
    "dominant_family": pl.String,
    "dominant_families": pl.String,
    "top_features": pl.String,
    "critical_incidents": pl.Int64,
    "warning_incidents": pl.Int64,
    "info_incidents": pl.Int64,
    "health": pl.Float64,
    "health_change": pl.Float64,
}


def health_expr(flagged_share: pl.Expr, max_score: pl.Expr, threshold: pl.Expr) -> pl.Expr:
    burden = 1.0 - (-flagged_share / FLAGGED_SHARE_SCALE).exp()
    excess = 1.0 - (-pl.max_horizontal(max_score / threshold - 1.0, pl.lit(0.0)) / EXCESS_SCALE).exp()
    incidents = sum(INCIDENT_WEIGHT[s] * pl.col(f"{s.lower()}_incidents") for s in INCIDENT_WEIGHT)
    return ((100.0 - 25.0 * burden - 25.0 * excess.fill_null(0.0)) / (1.0 + incidents)).round(3)


def incident_counts(alerts: pl.DataFrame) -> pl.DataFrame:
    """Active incidents per device-day and severity (``<severity>_incidents``)."""
    active = alerts.filter(pl.col("suppressed_by").is_null())
    return active.group_by("day", "device_id").agg(
        (pl.col("severity") == s).sum().cast(pl.Int64).alias(f"{s.lower()}_incidents") for s in INCIDENT_WEIGHT)


def _mean_shares(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """Mean percent per key over each device-day's explained points (a point without the key counts as 0), from
    ``family_pct`` (struct family → percent) or ``top_features`` (list of {feature, pct}); keys with no share are
    left out. Long form: day, device_id, key, pct, largest first."""
    keys = ["day", "device_id"]
    if isinstance(frame.schema[column], pl.Struct):
        long = frame.select(*keys, pl.col(column).struct.unnest()).unpivot(index=keys, variable_name="key",
                                                                         value_name="pct")
    else:
        long = frame.select(*keys, column).explode(column, empty_as_null=False).select(
            *keys, pl.col(column).struct.field("feature").alias("key"), pl.col(column).struct.field("pct"))
    counts = frame.group_by(keys).agg(pl.len().alias("n"))
    return (
        long.group_by(*keys, "key").agg(pl.col("pct").cast(pl.Float64).sum())
        .join(counts, on=keys)
        .with_columns((pl.col("pct") / pl.col("n")).round(2).alias("pct"))
        .filter(pl.col("pct") > 0)
        .sort(*keys, "pct", "key", descending=[False, False, True, False])
    )


def _as_json(long: pl.DataFrame, name: str, top: int, *, pairs: bool) -> pl.DataFrame:
    grouped = long.group_by("day", "device_id", maintain_order=True).agg(pl.col("key").head(top),
                                                                         pl.col("pct").head(top))
    text = [
        json.dumps([[k, p] for k, p in zip(keys, pcts)] if pairs else dict(zip(keys, pcts)))
        for keys, pcts in zip(grouped["key"].to_list(), grouped["pct"].to_list())
    ]
    return grouped.select("day", "device_id", pl.Series(name, text, dtype=pl.String),
                          pl.col("key").list.first().alias(f"{name}_first"))


def device_day_summaries(scores: pl.DataFrame, explanations: pl.DataFrame, alerts: pl.DataFrame) -> pl.DataFrame:
    """One row per (day, device): volume, score statistics, dominant families, top features, active incidents by
    severity (`alerts` of the day), health and its change against the device's previous day (NULL when that day
    is not in `scores`)."""
    base = scores.group_by("day", "device_id").agg(
        pl.len().cast(pl.Int64).alias("points"),
        pl.col("is_anomaly").sum().cast(pl.Int64).alias("flagged"),
        pl.col("is_anomaly").mean().alias("flagged_share"),
        pl.col("score").mean().alias("mean_score"),
        pl.col("score").quantile(0.95).alias("p95_score"),
        pl.col("score").max().alias("max_score"),
        pl.col("threshold").last().alias("threshold"),
    )
    families = _as_json(_mean_shares(explanations, "family_pct"), "dominant_families", 3,
                        pairs=False).rename({"dominant_families_first": "dominant_family"})
    features = _as_json(_mean_shares(explanations, "top_features"), "top_features", 5,
                        pairs=True).drop("top_features_first")
    out = (
        base.join(families, on=["day", "device_id"], how="left")
        .join(features, on=["day", "device_id"], how="left")
        .join(incident_counts(alerts), on=["day", "device_id"], how="left")
        .with_columns(pl.col(f"{s.lower()}_incidents").fill_null(0) for s in INCIDENT_WEIGHT)
        .with_columns(health_expr(pl.col("flagged_share"), pl.col("max_score"), pl.col("threshold")).alias("health"))
        .sort("device_id", "day")
    )
    previous = out.select(pl.col("day").dt.offset_by("1d"), "device_id", pl.col("health").alias("_prev"))
    out = out.join(previous, on=["day", "device_id"], how="left").with_columns(
        (pl.col("health") - pl.col("_prev")).alias("health_change")
    )
    return out.select(list(DEVICE_SUMMARY_SCHEMA)).cast(DEVICE_SUMMARY_SCHEMA)


def fleet_day_summary(device_summaries: pl.DataFrame, alerts: pl.DataFrame) -> pl.DataFrame:
    """One row per day: devices ranked by health (worst first), counts per dominant family and per alert cause."""
    rows = []
    for (day,), devs in device_summaries.sort("health", "device_id").partition_by("day", as_dict=True).items():
        day_alerts = alerts.filter((pl.col("day") == day) & pl.col("suppressed_by").is_null())
        fam = devs.filter(pl.col("flagged") > 0)["dominant_family"].drop_nulls().value_counts(sort=True)
        tags = day_alerts["tag"].fill_null("untagged").value_counts(sort=True)
        rows.append(
            {
                "day": day,
                "devices": devs.height,
                "mean_health": round(float(devs["health"].mean()), 1),
                "devices_below_50": int((devs["health"] < 50).sum()),
                "worst_device": devs["device_id"][0],
                "ranking": json.dumps([[d, h] for d, h in zip(devs["device_id"], devs["health"])]),
                "dominant_family_counts": json.dumps(dict(zip(fam["dominant_family"], fam["count"]))),
                "alerts": day_alerts.height,
                "critical_alerts": int((day_alerts["severity"] == "CRITICAL").sum()),
                "alert_cause_counts": json.dumps(dict(zip(tags["tag"], tags["count"]))),
            }
        )
    schema = {"day": pl.Date, "devices": pl.Int64, "mean_health": pl.Float64, "devices_below_50": pl.Int64,
              "worst_device": pl.String, "ranking": pl.String, "dominant_family_counts": pl.String,
              "alerts": pl.Int64, "critical_alerts": pl.Int64, "alert_cause_counts": pl.String}
    return pl.DataFrame(rows, schema=schema).sort("day")
