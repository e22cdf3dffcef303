"""Evaluation against labelled faults: point detection, episodes, root cause, alert quality.

Only evaluation uses labels; nothing here feeds back into thresholds.

Conventions
-----------
* A row is **positive** when it carries a ``fault_id`` (simulated faults label every sample of an episode), negative
  (fault-free) otherwise. Rows with ``in_training`` true are left out of every metric (the model saw them).
* ``is_anomaly`` NULL counts as not flagged. Rows with a NULL/NaN ``score`` are left out of ROC-AUC/PR-AUC only.
* Point metrics come from ``sklearn.metrics`` (precision/recall/F1, ROC-AUC, ``average_precision_score`` as
  PR-AUC); a metric that is undefined for the data (e.g. AUC with one class) is ``None``. No point adjustment.
* An **episode** is ``(device_id, fault_id)``: its start/end are its first/last labelled (evaluated) sample. It is
  detected when any of its points is flagged; delay = first flagged ts - start, in seconds.
* Results are dicts ``{"overall": {...}, "by_fault_type": {tag: {...}}}`` of plain floats/ints (JSON-able);
  ``metrics_frame`` flattens them into a long ``metric, scope, value`` frame for DuckDB.
* Rolling features remember a fault for up to their longest window after the labelled end, so fault-free rows
  right after an episode look anomalous. ``detection_metrics(..., post_fault_grace_s=...)`` reports *additionally*
  the false-alarm rate and ROC-AUC without those rows (the standard keys never change).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import polars as pl
from sklearn import metrics as skm

from itap_assets.core.parallel import default_threads

@dataclass(frozen=True)
class FaultTags:
    """What the labels mean, from the config (``evaluation:``) or the data source (the simulator's own faults):
    which tags are critical (``None``: every tag), which sensor families are each tag's right root cause (a sensor
    dropout's is ``DataQuality``) and which team each tag's incident must reach. A tag without a family or route is
    detected and alerted like any other; only its root cause or route is not graded."""

    critical: tuple[str, ...] | None = None
    families: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    routes: Mapping[str, str] = field(default_factory=dict)

    def critical_expr(self) -> pl.Expr:
        tag = pl.col("fault_tag")
        return tag.is_not_null() if self.critical is None else tag.is_in(list(self.critical))



def _f(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _median(values: Sequence[float]) -> float | None:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return float(np.median(v)) if v else None


def _safe(fn, *args, **kwargs) -> float | None:
    try:
        return _f(fn(*args, **kwargs))
    except ValueError:  # one class only
        return None


# ----------------------------------------------------------------------------------------------------------------
# episodes


def fault_episodes(telemetry: pl.DataFrame) -> pl.DataFrame:
    """Labelled episodes: ``device_id, fault_id, fault_tag, start_ts, end_ts, n_points``."""
    lab = telemetry.filter(pl.col("fault_id").is_not_null())
    return (
        lab.group_by("device_id", "fault_id")
        .agg(
            pl.col("fault_tag").drop_nulls().first(),
            pl.col("ts").min().alias("start_ts"),
            pl.col("ts").max().alias("end_ts"),
            pl.len().cast(pl.Int64).alias("n_points"),
        )
        .sort("device_id", "start_ts")
    )


def _expected_families(tags: FaultTags) -> pl.Expr:
    """The acceptable root-cause families of each row's ``fault_tag`` (empty: not graded)."""
    return pl.col("fault_tag").replace_strict({t: list(f) for t, f in tags.families.items()}, default=[],
                                              return_dtype=pl.List(pl.Utf8))


# ----------------------------------------------------------------------------------------------------------------
# detection


def _eval_rows(scores: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    need = {"device_id", "ts", "score", "is_anomaly", "fault_id"}
    missing = need - set(scores.columns)
    if missing:
        raise ValueError(f"scores frame lacks columns {sorted(missing)}")
    df = scores
    if "fault_tag" not in df.columns:
        df = df.with_columns(fault_tag=pl.lit(None, pl.Utf8))
    train = pl.col("in_training").fill_null(False) if "in_training" in df.columns else pl.lit(False)
    n_train = int(df.select(train.sum()).item() or 0)
    df = df.filter(~train).with_columns(
        pl.col("is_anomaly").cast(pl.Boolean).fill_null(False),
        pl.col("score").cast(pl.Float64).fill_nan(None),
        pl.col("fault_id").is_not_null().alias("_pos"),
    )
    return df, n_train


def _episodes(df: pl.DataFrame) -> pl.DataFrame:
    return (
        df.filter(pl.col("_pos"))
        .group_by("device_id", "fault_id")
        .agg(
            pl.col("fault_tag").drop_nulls().first(),
            pl.col("ts").min().alias("start_ts"),
            pl.col("ts").max().alias("end_ts"),
            pl.len().cast(pl.Int64).alias("n_points"),
            pl.col("is_anomaly").sum().cast(pl.Int64).alias("n_flagged"),
            pl.col("ts").filter(pl.col("is_anomaly")).min().alias("first_flag_ts"),
        )
        .with_columns(
            (pl.col("n_flagged") > 0).alias("detected"),
            ((pl.col("first_flag_ts") - pl.col("start_ts")).dt.total_microseconds() / 1e6).alias("delay_s"),
        )
        .sort("device_id", "start_ts")
    )


def _labels(y: np.ndarray) -> np.ndarray:
    """0/1 labels for sklearn: with booleans its label encoding takes a per-element Python path (3x slower)."""
    return y.astype(np.int8)


def _roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC-AUC, None with one class only. `roc_curve` + `auc` is what `roc_auc_score` computes for binary labels,
    without its label inference and binarisation (two passes of `np.unique` over millions of rows)."""
    if not (y.any() and (~y).any()):
        return None
    fpr, tpr, _ = skm.roc_curve(_labels(y), score, pos_label=1)
    return _f(skm.auc(fpr, tpr))


def _pr_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    return _safe(skm.average_precision_score, _labels(y), score)


def _on_rows(metric: Callable[[np.ndarray, np.ndarray], float | None], y: np.ndarray, score: np.ndarray,
             rows: np.ndarray) -> float | None:
    """`metric` of the selected rows, selected on the pool's thread (the copies of millions of rows run in
    parallel too)."""
    return metric(y[rows], score[rows])


def _point_block(y: np.ndarray, flag: np.ndarray, score: np.ndarray, pool: Executor) -> dict:
    """Point figures; the ranking metrics are submitted to `pool` (values are Futures until `_resolved`)."""
    has = ~np.isnan(score)
    neg = ~y
    # sklearn's figures from the four (label, flag) combinations weighted by their counts: the same values without
    # passing millions of rows through its input checks and label encoding.
    counts = np.bincount(_labels(y) * 2 + _labels(flag), minlength=4)
    p, r, f1, _ = skm.precision_recall_fscore_support(
        [0, 0, 1, 1], [0, 1, 0, 1], sample_weight=counts, average="binary", pos_label=1, zero_division=0.0
    ) if y.any() or flag.any() else (0.0, 0.0, 0.0, None)
    two = y[has].any() and (~y[has]).any()
    return {
        "rows": int(y.size),
        "positives": int(y.sum()),
        "negatives": int(neg.sum()),
        "flagged": int(flag.sum()),
        "precision": _f(p) if flag.any() else None,
        "recall": _f(r) if y.any() else None,
        "f1": _f(f1) if (y.any() or flag.any()) else None,
        "false_alarm_rate": _f(flag[neg].mean()) if neg.any() else None,
        "missed_alarm_rate": _f(1.0 - flag[y].mean()) if y.any() else None,
        "roc_auc": pool.submit(_on_rows, _roc_auc, y, score, has),
        "pr_auc": pool.submit(_on_rows, _pr_auc, y, score, has) if two else None,
        "unscored_rows": int((~has).sum()),
    }


def _resolved(figures: dict) -> dict:
    """`figures` with every Future replaced by its result (nested dicts included)."""
    return {k: _resolved(v) if isinstance(v, dict) else v.result() if isinstance(v, Future) else v
            for k, v in figures.items()}


def post_fault_mask(frame: pl.DataFrame, grace_s: float) -> np.ndarray:
    """Boolean per row of ``frame``: a fault-free row at most ``grace_s`` seconds after the end of a labelled
    episode of the same device (rolling features still "remember" the fault there)."""
    ends = (
        frame.filter(pl.col("fault_id").is_not_null())
        .group_by("device_id", "fault_id")
        .agg(pl.col("ts").max())
    )
    if ends.height == 0 or frame.height == 0:
        return np.zeros(frame.height, dtype=bool)
    # One integer axis, device after device and time within each: the latest episode end at or before a row is a
    # binary search among the few episode ends, with no sort of the millions of rows.
    code = {device: i for i, device in enumerate(frame["device_id"].unique().to_list())}
    t0 = frame["ts"].min()
    span = int((frame["ts"].max() - t0).total_seconds() * 1e6) + 1

    def axis(rows: pl.DataFrame) -> np.ndarray:
        return rows.select(pl.col("device_id").replace_strict(code, return_dtype=pl.Int64) * span
                           + (pl.col("ts") - t0).dt.total_microseconds()).to_series().to_numpy()

    row_key, end_key = axis(frame), np.sort(axis(ends))
    before = np.searchsorted(end_key, row_key, side="right") - 1
    last_end = end_key[np.maximum(before, 0)]
    same_device = (before >= 0) & (last_end // span == row_key // span)
    fault_free = frame["fault_id"].is_null().to_numpy()
    return fault_free & same_device & (row_key - last_end <= int(grace_s * 1e6))


def detection_metrics(scores: pl.DataFrame, post_fault_grace_s: float | None = None,
                      tags: FaultTags = FaultTags()) -> dict:
    """Point and episode detection metrics (see module doc). ``scores`` columns: ``device_id, ts, score, is_anomaly,
    in_training, fault_tag, fault_id``. Returns ``{"overall": {...}, "by_fault_type": {tag: {...}}}``.

    ``post_fault_grace_s`` (e.g. the longest feature window) adds *extra* keys -- ``post_fault_rows``,
    ``post_fault_flagged``, ``false_alarm_rate_excl_post_fault``, ``roc_auc_excl_post_fault`` -- that leave out
    fault-free rows within that many seconds after an episode's end; the standard keys are unchanged.
    """
    df, n_train = _eval_rows(scores)
    # sklearn's ranking metrics start with a stable argsort of the scores: given the rows in score order that is a
    # linear pass, not a fresh O(n log n) sort for each of the (overall, per fault type, post-fault) AUCs.
    order = df.select(pl.col("score").arg_sort(nulls_last=True)).to_series()
    ranked = df.select("_pos", "is_anomaly", "score", "fault_tag")[order]
    y = ranked["_pos"].to_numpy()
    flag = ranked["is_anomaly"].to_numpy()
    score = ranked["score"].to_numpy().astype(np.float64)
    score = np.where(np.isfinite(score), score, np.nan)
    # The ranking metrics (overall, per fault type, post-fault) are numpy passes that release the GIL: two at once.
    with ThreadPoolExecutor(default_threads()) as pool:
        overall = _point_block(y, flag, score, pool)
        overall["training_rows_excluded"] = n_train

        eps = _episodes(df)
        overall.update(_episode_block(eps))
        by_type: dict[str, dict] = {}
        neg = ~y
        for tag in sorted(t for t in df.filter(pl.col("_pos"))["fault_tag"].unique().to_list() if t is not None):
            sel = (ranked["fault_tag"] == tag).fill_null(False).to_numpy() & y  # Polars, not an object-array compare
            rows = (sel | neg) & ~np.isnan(score)
            block = {
                "points": int(sel.sum()),
                "point_recall": _f(flag[sel].mean()) if sel.any() else None,
                "roc_auc": pool.submit(_on_rows, _roc_auc, y, score, rows),
            }
            block.update(_episode_block(eps.filter(pl.col("fault_tag") == tag)))
            by_type[tag] = block
        crit = eps.filter(tags.critical_expr())
        overall.update({f"critical_{k}": v for k, v in _episode_block(crit).items()})
        if post_fault_grace_s is not None:
            post = post_fault_mask(df, post_fault_grace_s)[order.to_numpy()]
            keep = ~post
            has = ~np.isnan(score)
            overall.update(
                {
                    "post_fault_grace_s": float(post_fault_grace_s),
                    "post_fault_rows": int(post.sum()),
                    "post_fault_flagged": int((post & flag).sum()),
                    "false_alarm_rate_excl_post_fault": _f(flag[neg & keep].mean()) if (neg & keep).any() else None,
                    "roc_auc_excl_post_fault": pool.submit(_on_rows, _roc_auc, y, score, keep & has),
                }
            )
        return _resolved({"overall": overall, "by_fault_type": by_type})


def _episode_block(eps: pl.DataFrame) -> dict:
    n = eps.height
    det = int(eps["detected"].sum()) if n else 0
    return {
        "episodes": n,
        "episodes_detected": det,
        "episode_recall": det / n if n else None,
        "median_delay_s": _median(eps.filter(pl.col("detected"))["delay_s"].to_list()) if n else None,
    }


# ----------------------------------------------------------------------------------------------------------------
# root cause


def root_cause_accuracy(explained: pl.DataFrame, tags: FaultTags = FaultTags()) -> dict:
    """Share of explained, flagged fault points whose ``top_family`` is one of the fault's families (``tags``).

    ``explained``: ``device_id, fault_id, fault_tag, top_family`` per flagged point (fault-free points are ignored;
    ``in_training`` rows too). Point level: every flagged point counts (a point with NULL ``top_family`` is wrong).
    Episode level: the most frequent ``top_family`` of an episode's points. Faults whose tag has no family are left
    out and counted in ``points_unknown_family`` / ``episodes_unknown_family``.
    Returns ``{"overall": {points, accuracy, episodes, episode_accuracy}, "by_fault_type": {...}}``.
    """
    df = explained.filter(pl.col("fault_id").is_not_null())
    if "in_training" in df.columns:
        df = df.filter(~pl.col("in_training").fill_null(False))
    if "is_anomaly" in df.columns:
        df = df.filter(pl.col("is_anomaly").fill_null(False))
    df = df.with_columns(expected=_expected_families(tags))
    # A fault whose family is unknown (a generic tag such as "fault") has no right answer: it is left out and
    # counted, not scored as wrong.
    unknown = df.filter(pl.col("expected").list.len() == 0)
    df = df.filter(pl.col("expected").list.len() > 0).with_columns(
        correct=pl.col("top_family").is_not_null() & pl.col("expected").list.contains(pl.col("top_family")).fill_null(False)
    )
    ep = (
        df.filter(pl.col("top_family").is_not_null())
        .group_by("device_id", "fault_id")
        .agg(
            pl.col("fault_tag").first(),
            pl.col("expected").first(),
            pl.col("top_family").mode().sort().first().alias("mode_family"),
        )
        .with_columns(correct=pl.col("expected").list.contains(pl.col("mode_family")))
    )

    def block(points: pl.DataFrame, episodes_: pl.DataFrame) -> dict:
        n, e = points.height, episodes_.height
        return {
            "points": n,
            "accuracy": float(points["correct"].mean()) if n else None,
            "episodes": e,
            "episode_accuracy": float(episodes_["correct"].mean()) if e else None,
        }

    by_type = {
        tag: block(df.filter(pl.col("fault_tag") == tag), ep.filter(pl.col("fault_tag") == tag))
        for tag in sorted(t for t in df["fault_tag"].unique().to_list() if t is not None)
    }
    overall = block(df, ep) | {"points_unknown_family": unknown.height,
                                "episodes_unknown_family": unknown.select("device_id", "fault_id").n_unique()}
    return {"overall": overall, "by_fault_type": by_type}


# ----------------------------------------------------------------------------------------------------------------
# alerts


def alert_quality(
    alerts: pl.DataFrame,
    episodes: pl.DataFrame,
    fault_free_device_days: int,
    flagged_points: int,
    evidence_window_s: float | None = None,
    tags: FaultTags = FaultTags(),
    rule_families: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """Quality of routed alerts against labelled episodes, as the operator reads them.

    ``evidence_window_s`` (e.g. the longest feature window) adds *extra* keys ``*_with_evidence_window``: an alert
    that starts within that many seconds after an episode ended still rests on features computed over the fault,
    so it is counted as covering it. The standard keys are unchanged.

    Only active alerts (``suppressed_by`` NULL) count. An alert *covers* an episode when it is on the same device and
    ``alert.start_ts <= episode.end_ts and alert.end_ts >= episode.start_ts`` (closed intervals).

    * ``episodes_alerted`` / ``episode_alert_recall``: episodes covered by at least one alert; ``critical_*`` the
      same for the critical tags (``tags``); per fault type under ``by_fault_type``.
    * ``alert_precision``: active alerts covering some episode / active alerts.
    * ``median_time_to_alert_s``: per alerted episode, earliest covering alert start - episode start, floored at 0
      (an alert already open when the fault starts counts as immediate).
    * ``false_alerts_per_fault_free_device_day``: active alerts covering no episode / ``fault_free_device_days``
      (``alerts_per_fault_free_device_day`` is the same; both keys are kept for readability).
    * ``alerts_per_flagged_point``: active alerts / ``flagged_points`` (volume reduction; lower = fewer pages).
    * ``episode_single_incident``: share of episodes covered by exactly one active alert;
      ``episode_route_accuracy``: share of the episodes whose tag has a team (``tags.routes``) covered by exactly one
      active alert routed to that team; ``episode_cause_accuracy``: the same for the cause, right when the alert's
      rule names one of the tag's families (``rule_families``: rule → the families its cause text names; a burst
      or fallback names none). Per fault type too.
    """
    act = alerts.filter(pl.col("suppressed_by").is_null()).select(
        "alert_id", "device_id", pl.col("start_ts").alias("a_start"), pl.col("end_ts").alias("a_end"),
        pl.col("route").alias("a_route"),
        pl.col("rule_name").replace_strict({r: list(f) for r, f in (rule_families or {}).items()}, default=[],
                                           return_dtype=pl.List(pl.Utf8)).alias("a_families"),
    )
    ep = episodes.select("device_id", "fault_id", "fault_tag", "start_ts", "end_ts")
    pairs = act.join(ep, on="device_id", how="inner").filter(
        (pl.col("a_start") <= pl.col("end_ts")) & (pl.col("a_end") >= pl.col("start_ts"))
    )
    first = pairs.with_columns(
        route_ok=pl.col("a_route") == pl.col("fault_tag").replace_strict(dict(tags.routes), default=None,
                                                                          return_dtype=pl.Utf8),
        cause_ok=pl.col("a_families").list.set_intersection(_expected_families(tags)).list.len() > 0,
    ).group_by("device_id", "fault_id").agg(
        pl.col("a_start").min().alias("first_alert"), pl.len().alias("n_alerts"),
        pl.col("route_ok").all().alias("route_ok"), pl.col("cause_ok").all().alias("cause_ok"))
    single = pl.col("n_alerts").fill_null(0) == 1
    epq = ep.join(first, on=["device_id", "fault_id"], how="left").with_columns(
        single=single,
        route_ok=pl.when(pl.col("fault_tag").is_in(list(tags.routes))).then(single & pl.col("route_ok").fill_null(False)),
        cause_ok=pl.when(pl.col("fault_tag").is_in(list(tags.families))).then(single & pl.col("cause_ok").fill_null(False)),
        alerted=pl.col("first_alert").is_not_null(),
        tta_s=pl.max_horizontal(
            (pl.col("first_alert") - pl.col("start_ts")).dt.total_microseconds() / 1e6, pl.lit(0.0)
        ),
    )

    def block(e: pl.DataFrame) -> dict:
        n = e.height
        k = int(e["alerted"].sum()) if n else 0
        return {
            "episodes": n,
            "episodes_alerted": k,
            "episode_alert_recall": k / n if n else None,
            "median_time_to_alert_s": _median(e.filter(pl.col("alerted"))["tta_s"].to_list()) if k else None,
            "episode_single_incident": float(e["single"].mean()) if n else None,
            "episode_route_accuracy": _f(e["route_ok"].drop_nulls().cast(pl.Float64).mean()),
            "episode_cause_accuracy": _f(e["cause_ok"].drop_nulls().cast(pl.Float64).mean()),
        }

    n_alerts = act.height
    covering = pairs["alert_id"].n_unique() if pairs.height else 0
    false_alerts = n_alerts - covering
    extra = {}
    if evidence_window_s is not None:
        window = timedelta(seconds=evidence_window_s)
        late = act.join(ep, on="device_id", how="inner").filter(
            (pl.col("a_start") - window <= pl.col("end_ts")) & (pl.col("a_end") >= pl.col("start_ts"))
        )
        covering_late = late["alert_id"].n_unique() if late.height else 0
        extra = {
            "evidence_window_s": float(evidence_window_s),
            "alert_precision_with_evidence_window": covering_late / n_alerts if n_alerts else None,
            "false_alerts_per_fault_free_device_day_with_evidence_window":
                (n_alerts - covering_late) / fault_free_device_days if fault_free_device_days else None,
        }
    overall = {
        **block(epq),
        **{f"critical_{k}": v for k, v in block(epq.filter(tags.critical_expr())).items()},
        "active_alerts": n_alerts,
        "suppressed_alerts": alerts.height - n_alerts,
        "alerts_covering_fault": covering,
        "alert_precision": covering / n_alerts if n_alerts else None,
        "false_alerts": false_alerts,
        "fault_free_device_days": fault_free_device_days,
        "false_alerts_per_fault_free_device_day": false_alerts / fault_free_device_days
        if fault_free_device_days
        else None,
        "alerts_per_fault_free_device_day": false_alerts / fault_free_device_days if fault_free_device_days else None,
        "flagged_points": flagged_points,
        "alerts_per_flagged_point": n_alerts / flagged_points if flagged_points else None,
        **extra,
    }
    by_type = {
        tag: block(epq.filter(pl.col("fault_tag") == tag))
        for tag in sorted(t for t in epq["fault_tag"].unique().to_list() if t is not None)
    }
    return {"overall": overall, "by_fault_type": by_type}


def fault_free_device_days(telemetry: pl.DataFrame, exclude_training: bool = True) -> int:
    """Device-days without any labelled fault row (``in_training`` rows/days left out when present)."""
    df = telemetry
    if exclude_training and "in_training" in df.columns:
        df = df.filter(~pl.col("in_training").fill_null(False))
    day = pl.col("day") if "day" in df.columns else pl.col("ts").dt.date()
    per = df.group_by("device_id", day.alias("_d")).agg(pl.col("fault_id").is_not_null().any().alias("f"))
    return int((~per["f"]).sum())


# ----------------------------------------------------------------------------------------------------------------
# table form


def metrics_frame(result: Mapping, family: str = "") -> pl.DataFrame:
    """Flatten ``{"overall": {...}, "by_fault_type": {tag: {...}}}`` into ``metric, scope, value`` (Float64).

    ``scope`` is ``"all"`` or ``"fault_type=<tag>"``; ``metric`` is prefixed with ``family + "."`` when given.
    Non-numeric entries are skipped; undefined metrics are NULL.
    """
    rows: list[tuple[str, str, float | None]] = []
    pre = f"{family}." if family else ""

    def add(scope: str, block: Mapping) -> None:
        for key, val in block.items():
            if isinstance(val, bool):
                val = float(val)
            if val is None or isinstance(val, (int, float, np.integer, np.floating)):
                rows.append((pre + key, scope, None if val is None else float(val)))

    add("all", result.get("overall", {}))
    for tag, block in result.get("by_fault_type", {}).items():
        add(f"fault_type={tag}", block)
    return pl.DataFrame(rows, schema={"metric": pl.Utf8, "scope": pl.Utf8, "value": pl.Float64}, orient="row")
