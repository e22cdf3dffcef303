"""detection_metrics: how good detection, root cause and alerts are, measured against labels when they exist.

Labels (`fault_tag`/`fault_id`) are read here and nowhere else downstream of validation.
"""

from datetime import datetime, timezone

import dagster as dg
import polars as pl

from itap_assets.assets.metadata import markdown_table
from itap_assets.core.alerting import AlertRulesConfig
from itap_assets.core.alerting.config import DominantFamilyRule
from itap_assets.core.metrics import (
    FaultTags,
    alert_quality,
    detection_metrics as point_metrics,
    fault_episodes,
    fault_free_device_days,
    metrics_frame,
    root_cause_accuracy,
)
from itap_assets.core.simulator import SIMULATOR_FAULT_TAGS
from itap_assets.core.windows import feature_windows, longest_window_us
from itap_assets.resources import AlertRules, ItapConfig, Warehouse, writer_pool
from itap_assets.settings import Settings

HEADLINE = [
    ("detection.critical_episode_recall", "all"),
    ("detection.false_alarm_rate", "all"),
    ("detection.configured_risk", "all"),
    ("detection.roc_auc", "all"),
    ("detection.pr_auc", "all"),
    ("root_cause.accuracy", "all"),
    ("alerts.critical_episode_alert_recall", "all"),
    ("alerts.alert_precision", "all"),
    ("alerts.episode_single_incident", "all"),
    ("alerts.episode_route_accuracy", "all"),
    ("alerts.episode_cause_accuracy", "all"),
    ("alerts.alerts_per_fault_free_device_day", "all"),
    ("alerts.alerts_per_flagged_point", "all"),
]


def fault_tags(settings: Settings) -> FaultTags:
    """What the labels mean: the config's `evaluation:` section, else the simulator's own faults (simulation) or
    nothing beyond "a tag is a fault" (files)."""
    ev = settings.evaluation
    if ev is not None:
        return FaultTags(ev.critical_tags, ev.tag_families, ev.tag_routes)
    return SIMULATOR_FAULT_TAGS if settings.source == "simulation" else FaultTags()


def rule_families(rules: AlertRulesConfig) -> dict[str, tuple[str, ...]]:
    """Rule → the families its cause names (a burst or the fallback names none)."""
    return {r.name: r.families for r in rules.matching_rules if isinstance(r, DominantFamilyRule)}


def evaluate(scored: pl.DataFrame, explained: pl.DataFrame, alert_rows: pl.DataFrame, rules: AlertRulesConfig,
             evidence_window_s: float, tags: FaultTags, risk: float) -> pl.DataFrame:
    """All figures as one long table (metric, scope, value). The standard figures are strict; figures that allow
    for the features' look-back after an episode ends (`evidence_window_s`) are extra, separately named rows.
    `detection.configured_risk` stands beside `detection.false_alarm_rate`: what the thresholds promise per point
    against what fault-free rows after training got."""
    episodes = fault_episodes(scored.filter(~pl.col("in_training")))
    detection = point_metrics(scored, post_fault_grace_s=evidence_window_s, tags=tags)
    detection["overall"]["configured_risk"] = risk
    root = root_cause_accuracy(explained, tags)
    free_days = fault_free_device_days(scored)
    flagged = int(scored.filter(~pl.col("in_training"))["is_anomaly"].sum())
    quality = alert_quality(alert_rows, episodes, free_days, flagged, evidence_window_s=evidence_window_s, tags=tags,
                            rule_families=rule_families(rules))
    return pl.concat([metrics_frame(detection, "detection"), metrics_frame(root, "root_cause"),
                      metrics_frame(quality, "alerts")])


@dg.asset(
    deps=["scores", "explanations", "alerts", "validated"],
    pool=writer_pool(),
    group_name="report",
    kinds={"scikitlearn", "duckdb"},
)
def detection_metrics(context: dg.AssetExecutionContext, warehouse: Warehouse, itap_config: ItapConfig,
                      alert_rules: AlertRules) -> pl.DataFrame:
    """Point, episode, root-cause and alert-quality figures against the labels (training rows left out). Empty
    when the telemetry carries no labels."""
    settings = itap_config.settings
    # Every scored row comes from a validated row; only the labelled ones (a tenth of a fleet's rows) are joined,
    # the rest get NULL labels.
    scored = warehouse.query(
        "SELECT s.*, v.fault_tag, v.fault_id FROM scores s LEFT JOIN (SELECT device_id, day, ts, fault_tag, fault_id"
        " FROM validated WHERE fault_id IS NOT NULL) v USING (device_id, day, ts)"
    )
    if scored["fault_id"].null_count() == scored.height:
        context.log.info("no labelled rows: nothing to evaluate")
        return pl.DataFrame(schema={"metric": pl.String, "scope": pl.String, "value": pl.Float64,
                                    "computed_at": pl.Datetime("us")})
    # Root cause is judged on flagged, labelled points by their top family alone: the nested attribution columns
    # are not read. The labels come from `scored`, already in memory (a second 3-way join in DuckDB costs more).
    keys = ["device_id", "day", "ts"]
    labelled_flags = scored.filter(pl.col("is_anomaly") & pl.col("fault_id").is_not_null())
    explained = warehouse.query("SELECT device_id, day, ts, top_family FROM explanations").join(
        labelled_flags.select(*keys, "in_training", "is_anomaly", "fault_tag", "fault_id"), on=keys, how="inner")
    alert_rows = warehouse.query("SELECT * FROM v_alerts") if warehouse.has_table("v_alerts") else \
        warehouse.query("SELECT * FROM alerts")
    longest_window_s = longest_window_us(feature_windows(settings), scored) / 1e6  # auto: per device interval
    out = evaluate(scored, explained, alert_rows, alert_rules.rules, longest_window_s, fault_tags(settings),
                   settings.model.threshold.risk).with_columns(
        pl.lit(datetime.now(timezone.utc).replace(tzinfo=None)).alias("computed_at"))
    head = out.filter(pl.struct("metric", "scope").is_in([{"metric": m, "scope": s} for m, s in HEADLINE]))
    context.add_output_metadata({
        "headline": dg.MetadataValue.md(markdown_table(head.select("metric", "value"), limit=20)),
        **{m: float(v) for m, s, v in head.select("metric", "scope", "value").iter_rows() if v is not None},
    })
    return out
