"""alerts: flagged, explained points become few routed incidents through the YAML rules."""

import base64
from datetime import date, datetime, time, timedelta

import dagster as dg
import polars as pl

from itap_assets.assets.common import day_device_asset, own_partitions, previous_day_inputs, run_keys
from itap_assets.assets.metadata import add_partition_metadata, markdown_table
from itap_assets.core.alerting import Defaults, deadband_states, evaluate_alerts, grouping_reach_minutes
from itap_assets.core.frames import sorted_by
from itap_assets.core.plots import device_day_png
from itap_assets.resources import AlertRules, ItapConfig, Warehouse

PLOTS = 4

ALERT_COLUMNS = [
    "alert_id", "device_id", "day", "start_ts", "end_ts", "status", "severity", "rule_name", "cause", "route", "confidence",
    "max_score", "n_events", "families", "top_features", "action", "suppressed_by", "tag",
]


def scored_points(scores: pl.DataFrame, deadband: Defaults | None = None) -> pl.DataFrame:
    """Every scored point relative to its threshold (1.0 = at the threshold), in device and time order, with its
    deadband state (`deadband`: the rules' defaults; none: no deadband)."""
    relative = sorted_by(scores.select(
        "ts", "device_id", (pl.col("score") / pl.col("threshold")).alias("score"), "is_anomaly"), ["device_id", "ts"])
    clear_ratio, hold_minutes = (deadband.clear_ratio, deadband.hold_minutes) if deadband else (1.0, 0.0)
    return relative.hstack(deadband_states(relative, clear_ratio, hold_minutes))


def rule_points(scored: pl.DataFrame, explanations: pl.DataFrame, tags: pl.DataFrame | None = None) -> pl.DataFrame:
    """What the rule engine reads: each flagged point of `scored_points`, its explanation and, when the settings
    name them operational (`alerts.point_tags`), the source's tag of the point (`tags`: ts, device_id, tag).
    Evaluation labels never reach the rules otherwise."""
    flagged = scored.filter("is_anomaly").drop("held_flag")
    explained = explanations.select("ts", "device_id", "top_family", "family_pct", "top_features")
    keys = ["ts", "device_id"]
    if explained.select(keys).equals(flagged.select(keys)):
        # Scoring explains exactly the flagged points, stored in the same order: side by side, no join of the
        # nested columns.
        points = flagged.hstack(explained.drop(keys))
    else:
        points = flagged.join(explained, on=keys, how="left")
    if tags is None:
        return points.with_columns(pl.lit(None, dtype=pl.String).alias("tag"))
    return points.join(tags.select(*keys, pl.col("tag").cast(pl.String)), on=keys, how="left")


def point_tags(warehouse: Warehouse, column: str, points: pl.DataFrame) -> pl.DataFrame:
    """The source's tag (`column` of validated) at each flagged point."""
    flagged = points.filter("is_anomaly").select("ts", "device_id")
    return warehouse.query(f'SELECT v.ts, v.device_id, v."{column}" AS tag FROM validated v '
                           "JOIN flagged f ON v.device_id = f.device_id AND v.ts = f.ts", frames={"flagged": flagged})


def earlier_evidence(warehouse: Warehouse, scores: pl.DataFrame, reach_minutes: float
                     ) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """The stored scores and explanations of incidents still open where the inputs begin (a stored alert ending
    within `reach_minutes` before a device's first input row), from each such incident's start. The inputs reach
    back one day; with these an incident that has run for days keeps its start, id and evidence however the runs
    are cut. None when nothing was open."""
    if scores.height == 0 or not warehouse.has_table("alerts"):
        return None
    firsts = scores.group_by("device_id").agg(pl.col("ts").min().alias("first_ts"))
    spans = warehouse.query(
        "SELECT a.device_id, min(a.start_ts) AS since, any_value(f.first_ts) AS first_ts FROM alerts a "
        "JOIN firsts f USING (device_id) WHERE a.end_ts < f.first_ts AND a.start_ts < f.first_ts "
        f"AND a.end_ts >= f.first_ts - INTERVAL '{int(reach_minutes * 60_000_000)} microseconds' GROUP BY ALL",
        frames={"firsts": firsts})
    if spans.height == 0:
        return None
    within = "JOIN spans p USING (device_id) WHERE t.ts >= p.since AND t.ts < p.first_ts ORDER BY t.device_id, t.ts"
    return (warehouse.query(f"SELECT t.* FROM scores t {within}", frames={"spans": spans}).select(scores.columns),
            warehouse.query(f"SELECT t.* FROM explanations t {within}", frames={"spans": spans}))


def device_day_plots(keys: pl.DataFrame, scores: pl.DataFrame, explanations: pl.DataFrame,
                     active: pl.DataFrame) -> str:
    """Markdown with embedded PNGs for the run's device-days (`keys`) with the most active alerts (at most PLOTS)."""
    counts = active.group_by("day", "device_id").len()
    busiest = (keys.join(counts, on=["day", "device_id"], how="left")
               .with_columns(pl.col("len").fill_null(0)).sort("len", "device_id", descending=[True, False]).head(PLOTS))
    parts = []
    for day, device, n in busiest.iter_rows():
        mine = (pl.col("day") == day) & (pl.col("device_id") == device)
        png = device_day_png(scores.filter(mine).sort("ts"), explanations.filter(mine),
                             active.filter(pl.col("device_id") == device), f"{device} {day}: {n} active alert(s)")
        parts.append(f"**{device} {day}**\n\n![{device} {day}](data:image/png;base64,{base64.b64encode(png).decode()})")
    return "\n\n".join(parts) or "_no partitions_"


def day_snapshot(points: pl.DataFrame, scored: pl.DataFrame, alert_rules: AlertRules, day: date) -> pl.DataFrame:
    """The incidents of `day` as they stood at its end, from the evidence up to then (`scored`: `scored_points`):
    what a run of that day alone writes, so that a backfill writes the same rows (an incident still firing at
    midnight has a row on each day it was active, and itap.v_alerts shows its latest)."""
    start, end = datetime.combine(day, time.min), datetime.combine(day + timedelta(days=1), time.min)
    data_end = scored.filter(pl.col("ts") < end).group_by("device_id").agg(
        pl.col("ts").last().alias("data_end"), pl.col("held_flag").last())
    found = evaluate_alerts(points.filter(pl.col("ts") < end), alert_rules.rules, window_start=start,
                            data_end=data_end)
    return found.with_columns(pl.col("end_ts").dt.date().alias("day")).filter(pl.col("day") == day) \
        .select(ALERT_COLUMNS)


@day_device_asset(ins=previous_day_inputs("scores", "explanations"), group_name="report", kinds={"duckdb"})
def alerts(context: dg.AssetExecutionContext, scores: pl.DataFrame, explanations: pl.DataFrame,
           alert_rules: AlertRules, itap_config: ItapConfig, warehouse: Warehouse) -> pl.DataFrame:
    """One row per incident, one incident per device and stretch of evidence: what happened (cause), how bad
    (severity, max score relative to the threshold), how sure (confidence), why (families, top features), who owns
    it (route), what to do (action) and whether it is still firing. An incident belongs to the day its latest
    event falls on, as it stood at the end of that day; one spanning any number of midnights keeps its start and
    alert_id (`earlier_evidence`) and has a row on each of its days (itap.v_alerts shows its latest state)."""
    keys = run_keys(context)
    evidence_scores, evidence_explanations = scores, explanations
    earlier = earlier_evidence(warehouse, scores, grouping_reach_minutes(alert_rules.rules))
    if earlier is not None:
        evidence_scores = pl.concat([earlier[0], scores], how="vertical_relaxed")
        evidence_explanations = pl.concat([earlier[1].select(explanations.columns), explanations], how="vertical_relaxed")
    column = itap_config.settings.alerts.point_tags
    tags = point_tags(warehouse, column, evidence_scores) if column else None
    scored = scored_points(evidence_scores, alert_rules.rules.defaults)
    points = rule_points(scored, evidence_explanations, tags)
    out = own_partitions(pl.concat([day_snapshot(points, scored, alert_rules, day)
                                    for day in keys["day"].unique().sort()], how="vertical_relaxed"), keys)
    active = out.filter(pl.col("suppressed_by").is_null())
    add_partition_metadata(context, "alerts", out.with_columns(active=pl.col("suppressed_by").is_null()), keys, {
        "alerts": pl.len(), "active": pl.col("active").sum(),
        "critical": (pl.col("active") & (pl.col("severity") == "CRITICAL")).sum(),
        "firing": (pl.col("active") & (pl.col("status") == "firing")).sum()})
    context.add_output_metadata(
        {
            "plots": dg.MetadataValue.md(device_day_plots(keys, scores, explanations, active)),
            "alerts": out.height,
            "active": active.height,
            "critical": int((active["severity"] == "CRITICAL").sum()),
            "firing": int((active["status"] == "firing").sum()),
            "flagged_points": int(scores["is_anomaly"].sum()),
            "feed": dg.MetadataValue.md(markdown_table(
                active.sort("start_ts").select("severity", "status", "start_ts", "device_id", "cause", "route",
                                               "confidence", "n_events"), limit=20)),
        }
    )
    return out
