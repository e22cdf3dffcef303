"""What every partitioned ITAP step shares: single-run backfills (a range of partitions in one run), the writers'
pool (the DuckDB mode's one writer; none in the Parquet mode), inputs that bring day D-1 as context, keeping only the rows of the run's own partitions, and reading
features a device at a time."""

from collections.abc import Iterator, Sequence

import dagster as dg
import polars as pl

from itap_assets.core.frames import in_keys, sorted_by
from itap_assets.partitions import day_device_partitions, valid_keys, with_previous_day
from itap_assets.resources import WarehouseSession, partition_keys_frame, writer_pool
from itap_assets.storage import check_column


def partitioned_asset(partitions_def: dg.PartitionsDefinition, **kwargs):
    """`@dg.asset` for a step that writes tables and handles any range of `partitions_def` keys in one run."""
    return dg.asset(partitions_def=partitions_def, backfill_policy=dg.BackfillPolicy.single_run(), pool=writer_pool(),
                    **kwargs)


def day_device_asset(**kwargs):
    return partitioned_asset(day_device_partitions, **kwargs)


def previous_day_inputs(*names: str) -> dict[str, dg.AssetIn]:
    """Inputs that also load day D-1 of the same device (windows continuous across midnight)."""
    return {name: dg.AssetIn(partition_mapping=with_previous_day) for name in names}


def run_keys(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> pl.DataFrame:
    """The (day, device_id) rows of the run's day × device partitions. Dagster works the keys out anew on every
    access of `partition_keys` (tens of milliseconds for a hundred devices): read them once per step. A device key
    that is not a valid id is reported and left out."""
    keys = valid_keys(day_device_partitions, context.partition_keys, context.log.warning)
    return partition_keys_frame(day_device_partitions, keys)


def own_partitions(frame: pl.DataFrame, keys: pl.DataFrame) -> pl.DataFrame:
    """Keep the rows of the run's partitions `keys` (inputs may also carry day D-1 as context)."""
    mine = frame.select(in_keys(keys)).to_series()
    return frame if mine.all() else frame.filter(mine)  # nothing to drop: no copy (features are gigabytes)


def keys_by_device(keys: pl.DataFrame) -> Iterator[tuple[str, pl.DataFrame]]:
    """(device, that device's (day, device_id) keys) for a run's partition keys, in key order."""
    for (device,), device_keys in keys.partition_by("device_id", as_dict=True, maintain_order=True).items():
        yield device, device_keys


def device_features(session: WarehouseSession, device_keys: pl.DataFrame,
                    columns: Sequence[str] | None = None, context_rows: int = 0) -> pl.DataFrame:
    """One device's stored features for the partitions in `device_keys`, in time order (all columns, or the keys
    and `columns`): steps read features a device at a time, a day of a large fleet's features being gigabytes.
    `context_rows`: also the device's last rows before the first of those partitions, first in the frame."""
    select = "*" if columns is None else ", ".join(f'"{check_column(c)}"' for c in ["ts", "day", "device_id",
                                                                                       *columns])
    device, first = device_keys["device_id"][0], device_keys["day"].min()
    rows = session.query(
        f"SELECT {select} FROM features WHERE device_id = ? AND day BETWEEN ? AND ?",
        [device, first, device_keys["day"].max()],
    )
    # The join also copies the rows out of the Arrow batch DuckDB returned: any column kept from it (scores keep
    # `ts`) would hold the whole batch, all features of the device, until the step ends.
    rows = sorted_by(rows, ["ts"]).join(device_keys, on=["day", "device_id"], how="semi")
    if context_rows <= 0:
        return rows
    before = session.query(f"SELECT {select} FROM features WHERE device_id = ? AND day < ? ORDER BY ts DESC LIMIT ?",
                           [device, first, context_rows])
    return pl.concat([before.reverse(), rows], how="vertical_relaxed") if before.height else rows
