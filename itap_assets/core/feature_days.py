"""Features by day: each device-day computed from its own rows and the previous day's, never a longer history.

That is all a run of one day has (day D-1 is its context), so a day's features are the same bit for bit however
the runs were cut (30 daily runs, one 30-day backfill): a longer frame would change them in the last float bits,
since the sliding sums' rounding depends on where a frame starts, and could change the sampling interval inferred
from the rows. The price: in a run of many days each day's rows are featurized twice (as a day, as the next one's
context).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta

import polars as pl

from itap_assets.core.features import device_day_feature_chunks
from itap_assets.core.windows import WindowsArg

SEP = "|"  # device ids never hold it (settings.ID_PATTERN)
_FOR = "_for_day"


def day_frames(telemetry: pl.DataFrame, days: pl.DataFrame) -> pl.DataFrame:
    """The rows each (day, device_id) of `days` is featurized from, that day's and the previous day's, under the
    pseudo device `<device>|<day>`, grouped by pseudo device and sorted by time."""
    rows = telemetry.with_columns(pl.col("device_id").cast(pl.String))
    wanted = days.select(pl.col("day").alias(_FOR), pl.col("device_id").cast(pl.String))
    own = rows.with_columns(pl.col("day").alias(_FOR)).join(wanted, on=[_FOR, "device_id"], how="semi")
    before = rows.with_columns((pl.col("day") + timedelta(days=1)).alias(_FOR)).join(
        wanted, on=[_FOR, "device_id"], how="semi")
    return (
        pl.concat([before, own])
        .with_columns((pl.col("device_id") + SEP + pl.col(_FOR).cast(pl.String)).alias("device_id"))
        .drop(_FOR)
        .sort("device_id", "ts", maintain_order=True)
    )


def features_by_day(
    telemetry: pl.DataFrame, sensor_families: Mapping[str, str], windows: WindowsArg, days: pl.DataFrame,
    history_start: pl.DataFrame | None = None,
) -> Iterator[pl.DataFrame]:
    """Features of the rows of the (day, device_id) partitions `days`, in chunks of whole device-days (rows in
    device, day, time order); `telemetry` holds those days and, as context, the day before each.
    `history_start` (device_id, first_ts): each device's first stored sample, so that warm-up marks the start of
    a device's history, not the start of every day that follows an empty one."""
    starts = None
    if history_start is not None:
        starts = days.select(pl.col("device_id").cast(pl.String), pl.col("day")).join(
            history_start.with_columns(pl.col("device_id").cast(pl.String)), on="device_id").select(
            pl.col("device_id") + SEP + pl.col("day").cast(pl.String), "first_ts")
    for chunk in device_day_feature_chunks(day_frames(telemetry, days), sensor_families, windows,
                                           history_start=starts):
        pseudo = pl.col("device_id")
        yield chunk.filter(pseudo.str.tail(10) == pl.col("day").cast(pl.String)).with_columns(
            pseudo.str.head(-11).alias("device_id"))
