"""Flagged points → incidents: one per device while its evidence continues (Alertmanager's ``group_by:
[device_id]``), with the evidence aggregated over the whole incident, so the cause is decided once from all of it.

Points of one device, sorted by time, belong to one incident while consecutive points are at most the grouping gap
apart. Per incident: first/last point, number of points, largest score; ``families`` = each point's ``family_pct``
renormalised to 100 over its finite, non-negative values and averaged over the incident weighted by the points'
scores, so the strongest evidence weighs most (columns ``_fam:<family>`` and a JSON object, largest first); per burst rule the largest number of flagged points inside one of its windows
(``_burst:<rule>``; a window ending at ``t`` holds the points with ``t - window <= ts <= t``); the most frequent
point tag (ties: earliest, then alphabetical); the top features (mean percent over the points that carry a list).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import polars as pl

from itap_assets.core.alerting.config import BurstRule
from itap_assets.core.frames import sorted_by

TOP_FEATURES_PER_ALERT = 5
_REQUIRED = {"ts", "device_id", "score", "is_anomaly"}
_OPTIONAL = ("top_family", "family_pct", "top_features", "tag", "bridged")


def us(minutes: float) -> int:
    return int(round(minutes * 60_000_000))


def normalise_tag_expr(expr: pl.Expr) -> pl.Expr:
    """Vectorised ``config.normalise_tag``."""
    out = (
        expr.cast(pl.Utf8)
        .str.strip_chars()
        .str.to_lowercase()
        .str.replace_all(r"[\s\-_]+", "_")
        .str.strip_chars("_")
    )
    return pl.when(out.str.len_chars() > 0).then(out).otherwise(None)


def prepare_points(points: pl.DataFrame) -> pl.DataFrame:
    """The flagged points, one per device and timestamp, sorted by device and time, numbered ``_i``."""
    missing = _REQUIRED - set(points.columns)
    if missing:
        raise ValueError(f"points is missing column(s) {sorted(missing)}; got {points.columns}")
    df = points.select(
        *(pl.col(c) for c in ("ts", "device_id", "score", "is_anomaly")),
        *(pl.col(c) if c in points.columns else pl.lit(None).alias(c) for c in _OPTIONAL),
    )
    _check_explanation_types(df.schema)
    ts = pl.col("ts")
    ts_dtype = df.schema["ts"]
    if isinstance(ts_dtype, pl.Datetime) and ts_dtype.time_zone is not None:
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    df = df.with_columns(
        ts.cast(pl.Datetime("us")),
        pl.col("device_id").cast(pl.Utf8),
        pl.col("score").cast(pl.Float64).fill_nan(None),
        pl.col("is_anomaly").cast(pl.Boolean).fill_null(False),
        pl.col("bridged").cast(pl.Boolean).fill_null(False),
        normalise_tag_expr(pl.col("tag")).alias("tag"),
    ).filter(pl.col("is_anomaly") & pl.col("ts").is_not_null() & pl.col("device_id").is_not_null())
    keys = ["device_id", "ts"]
    if df.select(pl.struct(keys).is_duplicated().any()).item():
        # One event per device and timestamp; the sort makes the survivor independent of the input row order.
        df = df.sort(
            [*keys, "score", "tag", "family_pct", "top_features"],
            descending=[False, False, True, False, False, False],
            nulls_last=True,
        ).unique(subset=keys, keep="first", maintain_order=True)
    else:  # the usual case, and sorting by the nested columns costs more than the rest of the engine
        df = sorted_by(df, keys)
    return df.with_row_index("_i")


def _check_explanation_types(schema: pl.Schema) -> None:
    """``family_pct`` and ``top_features`` as ``explain_points`` writes them (or absent / all NULL)."""
    families, features = schema["family_pct"], schema["top_features"]
    if not isinstance(families, (pl.Struct, pl.Null)):
        raise ValueError(f"family_pct must be a struct of family → percent (as explanations stores it), got {families}")
    entry = features.inner if isinstance(features, pl.List) else None
    if not isinstance(features, pl.Null) and not (
        isinstance(entry, pl.Struct) and {"feature", "pct"} <= {f.name for f in entry.fields}
    ):
        raise ValueError(f"top_features must be a list of {{feature, pct}} (as explanations stores it), got {features}")


def family_columns(df: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Each point's attribution renormalised to 100 over its finite, non-negative shares, one Float64 column per
    field of ``family_pct`` (``_fam:<name>``); a point without attribution has 0 everywhere."""
    if not isinstance(df.schema["family_pct"], pl.Struct) or df["family_pct"].null_count() == df.height:
        return df, []
    families = [f.name for f in df.schema["family_pct"].fields]
    values = [pl.col("family_pct").struct.field(f).cast(pl.Float64).fill_nan(None).fill_null(0.0)
              .clip(lower_bound=0.0) for f in families]
    total = pl.sum_horizontal(values)
    return df.with_columns(
        pl.when(total > 0).then(v * 100.0 / total).otherwise(0.0).alias(f"_fam:{f}") for v, f in zip(values, families)
    ), families


def with_burst_counts(df: pl.DataFrame, rules: Sequence[BurstRule]) -> pl.DataFrame:
    """Per burst rule, the device's flagged points in the window ending at each point (``_burst:<rule>``)."""
    return df.with_columns(
        pl.col("ts").is_not_null().cast(pl.Int64)
        .rolling_sum_by("ts", timedelta(microseconds=us(rule.window_minutes)), closed="both")
        .over("device_id").alias(f"_burst:{rule.name}")
        for rule in rules
    )


def incident_ids(gap_us: int) -> pl.Expr:
    """Incident number of each point (of points sorted by device and time): a new incident starts at a device's first
    point and after every gap longer than ``gap_us`` that is not ``bridged``."""
    prev = pl.col("ts").shift(1).over("device_id")
    gap = (pl.col("ts") - prev).dt.total_microseconds() > gap_us
    return (prev.is_null() | (gap & ~pl.col("bridged"))).cast(pl.Int64).cum_sum()


def deadband_states(scores: pl.DataFrame, clear_ratio: float, hold_minutes: float) -> pl.DataFrame:
    """The deadband (ISA-18.2) of each scored point (``ts, device_id, score`` relative to the threshold,
    ``is_anomaly``; sorted by device and time): ``held_flag`` = the device's last flagged point while every score
    since it stayed at or above ``clear_ratio``, for at most ``hold_minutes`` (the fault lulled, it did not recover;
    else null); ``bridged`` = flagged with the deadband holding the previous flag, so the two are one incident
    however far apart. Depends only on earlier points: a run given ``hold_minutes`` of context finds what a
    backfill finds."""
    if clear_ratio >= 1 or hold_minutes <= 0:
        return pl.DataFrame({"held_flag": pl.Series([None] * scores.height, dtype=pl.Datetime("us")),
                             "bridged": pl.Series([False] * scores.height, dtype=pl.Boolean)})
    ts, hold = pl.col("ts").dt.epoch("us"), us(hold_minutes)
    flag = pl.col("is_anomaly").fill_null(False)
    holds = (pl.col("score") >= clear_ratio).fill_null(False)
    # The time of the last flag, or a far past after a point that neither flags nor holds (it ends the lull).
    last = (pl.when(flag).then(ts).when(~holds).then(pl.lit(-(2**62), dtype=pl.Int64)).otherwise(None)
            .forward_fill().over("device_id"))
    held = pl.when(flag | (holds & (ts - last <= hold))).then(last)
    out = scores.select(ts.alias("_ts"), flag.alias("_flag"), "device_id", held.alias("_held"))
    return out.select(
        pl.from_epoch("_held", time_unit="us").alias("held_flag"),
        (pl.col("_flag") & (pl.col("_ts") - pl.col("_held").shift(1).over("device_id") <= hold)).fill_null(False)
        .alias("bridged"))


def aggregate(df: pl.DataFrame, families: list[str], burst_rules: Sequence[BurstRule],
              top_features: pl.DataFrame) -> pl.DataFrame:
    """One row per incident (``_inc``) with its evidence; `top_features` holds the points' lists by row ``_i``."""
    weight = pl.col("score").fill_null(0.0).clip(lower_bound=0.0) + 1e-9  # stronger points are stronger evidence
    inc = df.group_by("_inc").agg(
        pl.col("device_id").first(),
        pl.col("ts").min().alias("start_ts"),
        pl.col("ts").max().alias("end_ts"),
        pl.len().cast(pl.Int64).alias("n_events"),
        pl.col("score").max().alias("max_score"),
        *((pl.col(f"_fam:{f}") * weight).sum() / weight.sum() for f in families),
        *(pl.col(f"_burst:{r.name}").max() for r in burst_rules),
    )
    tags = (
        df.filter(pl.col("tag").is_not_null())
        .group_by(["_inc", "tag"])
        .agg(pl.len().alias("_n"), pl.col("ts").min().alias("_first"))
        .sort(["_inc", "_n", "_first", "tag"], descending=[False, True, False, False])
        .unique(subset="_inc", keep="first", maintain_order=True)
        .select("_inc", pl.col("tag").alias("_point_tag"))
    )
    inc = inc.join(tags, on="_inc", how="left")
    feature_lists = _top_features(df.select("_i", "_inc"), top_features)
    fam_texts, feat_texts = [], []
    for row in inc.select("_inc", *(f"_fam:{f}" for f in families)).iter_rows():
        pairs = sorted(((f, v) for f, v in zip(families, row[1:]) if v is not None and v > 0),
                       key=lambda p: (-p[1], p[0]))
        fam_texts.append(json.dumps({f: round(v, 2) for f, v in pairs}))
        feat_texts.append(json.dumps(feature_lists.get(row[0], [])))
    return inc.with_columns(pl.Series("families", fam_texts, dtype=pl.Utf8),
                            pl.Series("top_features", feat_texts, dtype=pl.Utf8))


def _top_features(incident_of: pl.DataFrame, top_features: pl.DataFrame) -> dict[int, list[list[Any]]]:
    """Mean percent per feature over an incident's points that carry a list, the top N per incident. The lists are
    flattened where they lie and each entry finds its incident by row index (moving a million lists into incident
    order cost more than all the rest)."""
    n_with = incident_of.join(top_features.select("_i"), on="_i", how="semi").group_by("_inc").agg(
        pl.len().alias("_n"))
    out: dict[int, list[list[Any]]] = {}
    if not n_with.height:
        return out
    ranked = (
        top_features.explode("top_features", empty_as_null=False)
        .select(
            "_i",
            pl.col("top_features").struct.field("feature").alias("_feature"),
            pl.col("top_features").struct.field("pct").cast(pl.Float64).fill_nan(None).fill_null(0.0).alias("_pct"),
        )
        .filter(pl.col("_feature").is_not_null())
        .join(incident_of, on="_i")
        .group_by(["_inc", "_feature"])
        .agg(pl.col("_pct").sum())
        .join(n_with, on="_inc")
        .with_columns(_pct=pl.col("_pct") / pl.col("_n"))
        .sort(["_inc", "_pct", "_feature"], descending=[False, True, False])
        .with_columns(_rank=pl.int_range(pl.len()).over("_inc"))
        .filter(pl.col("_rank") < TOP_FEATURES_PER_ALERT)
    )
    for key, feature, pct in ranked.select("_inc", "_feature", "_pct").iter_rows():
        out.setdefault(key, []).append([feature, round(pct, 2)])
    return out
