"""``evaluate_alerts``: scored, explained points → one routed incident per device and stretch of evidence.

1. Points of one device merge into one incident while consecutive points are at most
   ``max(merge_gap_minutes, cooldown_minutes)`` (defaults) apart, or further apart when ``bridged`` (the score
   stayed above the deadband's clear level between them; ``alerting.incidents.deadband_states``).
2. Each incident's rule, confidence, severity and route are decided from all its evidence
   (``alerting.decisions``). Consecutive incidents of a device decided for the same rule fold into one when the
   later starts within that rule's ``cooldown_minutes`` of the earlier's end (a flapping device pages once); the
   folded incident is decided again from the joint evidence.
3. ``alert_id`` = sha1 of ``device_id|start_ts``: stable across runs, input order and revisions of the cause, so a
   cause revised as evidence grows keeps its id.
4. Like Alertmanager's ``for:``, an incident with fewer than its rule's ``min_events`` points is kept with
   ``suppressed_by = "min_events:<n>"``; one overlapping a maintenance window (``silences``, ``[start, end)``) with
   ``suppressed_by = "silence:<name or index>"`` (a silence wins).
5. ``status``: ``resolved`` once the device's latest scored reading (``data_end``) is at least
   ``resolve_after_minutes`` past the incident's last point and the deadband no longer holds that point
   (``held_flag``), else ``firing``.
6. Only incidents with ``end_ts >= window_start`` are returned (the caller passes the previous day as context, so
   incidents continue across midnight).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import polars as pl

from itap_assets.core.alerting.config import AlertRulesConfig, BurstRule, to_naive_utc
from itap_assets.core.alerting.decisions import cooldown_minutes, decide, describe, min_events
from itap_assets.core.alerting.incidents import aggregate, family_columns, incident_ids, prepare_points, us, \
    with_burst_counts

ALERT_SCHEMA: dict[str, pl.DataType] = {
    "alert_id": pl.Utf8(),
    "device_id": pl.Utf8(),
    "start_ts": pl.Datetime("us"),
    "end_ts": pl.Datetime("us"),
    "status": pl.Utf8(),
    "severity": pl.Utf8(),
    "rule_name": pl.Utf8(),
    "cause": pl.Utf8(),
    "route": pl.Utf8(),
    "confidence": pl.Float64(),
    "max_score": pl.Float64(),
    "n_events": pl.Int64(),
    "families": pl.Utf8(),
    "top_features": pl.Utf8(),
    "action": pl.Utf8(),
    "suppressed_by": pl.Utf8(),
    "tag": pl.Utf8(),
}


def empty_alerts() -> pl.DataFrame:
    return pl.DataFrame(schema=ALERT_SCHEMA)


def alert_id(device_id: str, start_ts: datetime) -> str:
    """Deterministic incident id: sha1 of ``device_id|start_ts`` (ISO, microseconds), first 16 hex chars."""
    key = f"{device_id}|{start_ts.strftime('%Y-%m-%dT%H:%M:%S.%f')}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def grouping_reach_minutes(config: AlertRulesConfig) -> float:
    """How far apart two points of one incident can be: the merge gap, the deadband's hold, or the longest cooldown
    that folds."""
    return max(config.defaults.merge_gap_minutes, config.defaults.cooldown_minutes, config.defaults.hold_minutes,
               *(cooldown_minutes(r, config) for r in config.alerting_rules))


def _decided(df: pl.DataFrame, config: AlertRulesConfig, families: list[str], bursts: list[BurstRule],
             top_features: pl.DataFrame) -> pl.DataFrame:
    return decide(aggregate(df, families, bursts, top_features), config, families)


def _folds(inc: pl.DataFrame, config: AlertRulesConfig) -> pl.DataFrame:
    """``_inc`` → ``_fold``: consecutive incidents of a device with the same rule, the later starting within the
    rule's cooldown of the earlier's end, share a fold."""
    cooldowns = {r.name: us(cooldown_minutes(r, config)) for r in config.alerting_rules}
    inc = inc.sort("device_id", "start_ts")
    prev_end, prev_rule = (pl.col(c).shift(1).over("device_id") for c in ("end_ts", "rule_name"))
    new = (prev_rule.is_null() | (prev_rule != pl.col("rule_name"))
           | ((pl.col("start_ts") - prev_end).dt.total_microseconds()
              > pl.col("rule_name").replace_strict(cooldowns, return_dtype=pl.Int64)))
    return inc.select("_inc", new.cast(pl.Int64).cum_sum().alias("_fold"))


def _silenced(alerts: pl.DataFrame, config: AlertRulesConfig) -> pl.Expr:
    devices = alerts["device_id"].unique().to_list()
    expr = None
    for i, silence in enumerate(config.silences):
        matched = [d for d in devices if silence.matches(d)]
        if matched:
            cond = (pl.col("device_id").is_in(matched) & (pl.col("start_ts") < silence.end)
                    & (pl.col("end_ts") >= silence.start))
            label = pl.lit(f"silence:{silence.name if silence.name else i}")
            expr = (pl.when(cond) if expr is None else expr.when(cond)).then(label)
    return pl.lit(None, dtype=pl.Utf8) if expr is None else expr.otherwise(pl.lit(None, dtype=pl.Utf8))


def evaluate_alerts(points: pl.DataFrame, config: AlertRulesConfig, *, window_start: datetime | None = None,
                    data_end: pl.DataFrame | None = None) -> pl.DataFrame:
    """Routed incidents from ``points`` (ts, device_id, score, is_anomaly; optionally bridged, top_family,
    family_pct, top_features, tag as the explanations table stores them). ``data_end``: ``device_id, data_end`` = each
    device's latest scored reading (default: its latest flagged point), optionally ``held_flag`` = the flagged
    point the deadband still holds at that reading (``deadband_states``). Returns exactly :data:`ALERT_SCHEMA`,
    sorted by start_ts, device_id, alert_id."""
    df = prepare_points(points)
    if df.height == 0:
        return empty_alerts()
    df, families = family_columns(df)
    # The nested columns stay out of the sorts and joins below: only each incident's top features need them.
    top_features = df.select("_i", "top_features").filter(pl.col("top_features").is_not_null())
    bursts = [r for r in config.matching_rules if isinstance(r, BurstRule)]
    defaults = config.defaults
    df = with_burst_counts(df.drop("family_pct", "top_features"), bursts)
    df = df.with_columns(_inc=incident_ids(us(max(defaults.merge_gap_minutes, defaults.cooldown_minutes))))
    inc = _decided(df, config, families, bursts, top_features)
    folds = _folds(inc, config)
    if folds["_fold"].n_unique() < folds.height:
        df = df.join(folds, on="_inc", how="left").with_columns(
            _inc=pl.coalesce("_fold", -pl.col("_inc"))).drop("_fold")
        inc = _decided(df, config, families, bursts, top_features)
    if inc.height == 0:
        return empty_alerts()
    alerts = describe(inc, config)
    alerts = alerts.with_columns(pl.Series("alert_id", [alert_id(d, s) for d, s in
                                                        alerts.select("device_id", "start_ts").iter_rows()]))
    needed = pl.col("rule_name").replace_strict(
        {r.name: min_events(r, config) for r in config.alerting_rules}, return_dtype=pl.Int64)
    if data_end is None:
        data_end = df.group_by("device_id").agg(pl.col("ts").max().alias("data_end"))
    if "held_flag" not in data_end.columns:
        data_end = data_end.with_columns(held_flag=pl.lit(None, dtype=pl.Datetime("us")))
    alerts = alerts.join(data_end.select("device_id", *(pl.col(c).cast(pl.Datetime("us"))
                                                        for c in ("data_end", "held_flag"))),
                         on="device_id", how="left").with_columns(
        suppressed_by=pl.coalesce(_silenced(alerts, config),
                                  pl.when(pl.col("n_events") < needed).then(pl.format("min_events:{}", needed))),
        status=pl.when(((pl.col("data_end") - pl.col("end_ts")).dt.total_microseconds()
                        >= us(defaults.resolve_after_minutes))
                       & pl.col("held_flag").ne_missing(pl.col("end_ts")))
        .then(pl.lit("resolved")).otherwise(pl.lit("firing")),
    )
    if window_start is not None:
        alerts = alerts.filter(pl.col("end_ts") >= to_naive_utc(window_start))
    return (alerts.sort(["start_ts", "device_id", "alert_id"])
            .select(pl.col(name).cast(dtype) for name, dtype in ALERT_SCHEMA.items()))
