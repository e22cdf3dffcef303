"""Where each device's training window lies and whether its baseline is complete.

One rule decides what the model step fits, which devices it leaves for later while their baseline accumulates,
what scoring reports for a device without a model and when the training sensor asks for a device's first model.
Pure logic: Polars frames in, Polars frames out.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from itap_assets.settings import TrainingWindow

# One row per device: its first and newest day and ts with features, its sample count and (first_samples only) the
# ts of its N-th sample.
HISTORY_SCHEMA = {"device_id": pl.String, "first_day": pl.Date, "last_day": pl.Date, "first_ts": pl.Datetime("us"),
                  "samples": pl.Int64, "nth_ts": pl.Datetime("us")}
READY, ACCUMULATING, TOO_SHORT = "ready", "accumulating", "too_short"


def training_bounds(history: pl.DataFrame, training: TrainingWindow, as_of: date | None = None) -> pl.DataFrame:
    """Each device's window as [start, end) and whether every day of it has been materialized (`complete`).

    `last_days: N` ends with the device's newest day, or with `as_of` when that is earlier (a scheduled
    retraining names its day, so running it again later fits the same window; a device that stopped reporting
    keeps its last window).
    """
    midnight = pl.col("first_day").cast(pl.Datetime("us"))
    if training.first_days is not None:
        n = training.first_days
        exprs = [midnight, midnight + pl.duration(days=n), pl.col("last_day") >= pl.col("first_day") + pl.duration(
            days=n - 1), pl.format("{} of {} days", pl.min_horizontal(_days_seen(), n), pl.lit(n))]
    elif training.first_samples is not None:
        n = training.first_samples
        exprs = [pl.col("first_ts"), pl.col("nth_ts") + pl.duration(microseconds=1), pl.col("samples") >= n,
                 pl.format("{} of {} samples", pl.min_horizontal("samples", n), pl.lit(n))]
    elif training.last_days is not None:
        n = training.last_days
        anchor = pl.col("last_day") if as_of is None else pl.min_horizontal("last_day", pl.lit(as_of))
        start = anchor - pl.duration(days=n - 1)
        exprs = [start.cast(pl.Datetime("us")), (anchor + pl.duration(days=1)).cast(pl.Datetime("us")),
                 pl.col("first_day") <= start,
                 pl.format("{} of {} days", pl.min_horizontal((anchor - pl.col("first_day")).dt.total_days() + 1, n),
                           pl.lit(n))]
    else:
        last_day = (training.end - timedelta(microseconds=1)).date()
        exprs = [pl.lit(training.start, pl.Datetime("us")), pl.lit(training.end, pl.Datetime("us")),
                 pl.col("last_day") >= last_day, pl.format("data through {} of {}", "last_day", pl.lit(str(last_day)))]
    names = ("start", "end", "complete", "progress")
    return history.select("device_id", *(e.alias(name) for e, name in zip(exprs, names)))


def _days_seen() -> pl.Expr:
    return (pl.col("last_day") - pl.col("first_day")).dt.total_days() + 1


def baseline_status(devices: list[str], bounds: pl.DataFrame, rows: pl.DataFrame, min_rows: int) -> pl.DataFrame:
    """Per device: `ready` (window complete, enough rows to fit), `accumulating` (its window is still being filled:
    skipped, not an error) or `too_short` (complete with fewer rows than model.min_training_rows: widen the
    window). `rows` holds each device's fittable rows in its window (`baseline_rows`); a device without features
    is accumulating with none."""
    out = (pl.DataFrame({"device_id": devices}, schema={"device_id": pl.String})
           .join(bounds, on="device_id", how="left")
           .join(rows, on="device_id", how="left")
           .with_columns(pl.col("baseline_rows").fill_null(0).cast(pl.Int64), pl.lit(min_rows).alias("rows_needed"),
                         pl.col("complete").fill_null(False), pl.col("progress").fill_null("no features yet")))
    status = (pl.when(~pl.col("complete")).then(pl.lit(ACCUMULATING))
              .when(pl.col("baseline_rows") < min_rows).then(pl.lit(TOO_SHORT)).otherwise(pl.lit(READY)))
    return out.select("device_id", status.alias("status"), "baseline_rows", "rows_needed", "progress", "start", "end")

