"""What every partitioned ITAP step shares: single-run backfills (a range of partitions in one run), the DuckDB
writer pool, inputs that bring day D-1 as context, and keeping only the rows of the run's own partitions."""

import dagster as dg
import polars as pl

from itap_assets.partitions import day_device_partitions, with_previous_day
from itap_assets.resources import DUCKDB_POOL, partition_keys_frame


def partitioned_asset(partitions_def: dg.PartitionsDefinition, **kwargs):
    """`@dg.asset` for a step that writes DuckDB and handles any range of `partitions_def` keys in one run."""
    return dg.asset(partitions_def=partitions_def, backfill_policy=dg.BackfillPolicy.single_run(), pool=DUCKDB_POOL,
                    **kwargs)


def day_device_asset(**kwargs):
    return partitioned_asset(day_device_partitions, **kwargs)


def previous_day_inputs(*names: str) -> dict[str, dg.AssetIn]:
    """Inputs that also load day D-1 of the same device (windows continuous across midnight)."""
    return {name: dg.AssetIn(partition_mapping=with_previous_day) for name in names}


def own_partitions(context: dg.AssetExecutionContext, frame: pl.DataFrame) -> pl.DataFrame:
    """Keep the rows of this run's partitions (inputs may also carry day D-1 as context)."""
    keys = partition_keys_frame(day_device_partitions, list(context.partition_keys))
    present = frame.select(keys.columns).unique()
    if present.join(keys, on=keys.columns, how="anti").height == 0:
        return frame  # nothing to drop: no copy (a day of a large fleet's features is gigabytes)
    return frame.join(keys, on=keys.columns, how="semi")


def device_slices(frame: pl.DataFrame):
    """(device, rows) per device of a frame sorted by device: zero-copy slices, not copies (a day of a large fleet
    is gigabytes of features)."""
    bounds = frame.select(pl.col("device_id").rle()).unnest("device_id")
    offset = 0
    for length, device in bounds.iter_rows():
        yield device, frame.slice(offset, length)
        offset += length
