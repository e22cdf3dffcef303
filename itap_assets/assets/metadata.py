"""Metadata helpers shared by the asset steps: what the Dagster UI shows on a materialization or a check."""

import dagster as dg
import polars as pl


def markdown_table(frame: pl.DataFrame, limit: int = 10) -> str:
    """A small markdown table (first `limit` rows) for the UI."""
    if frame.height == 0:
        return "_none_"
    shown = frame.head(limit)
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * shown.width + "\n"
    rows = "\n".join("| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in shown.iter_rows())
    more = f"\n\n… {frame.height - limit} more" if frame.height > limit else ""
    return header + rows + more


# Dagster checks each partition key against the run's whole range (a linear scan per call), so per-partition
# figures are attached for runs of up to this many partitions; a bigger backfill shows the run's totals only.
MAX_PARTITION_METADATA = 2000


def add_partition_metadata(context: dg.AssetExecutionContext, asset: str | dg.AssetKey, frame: pl.DataFrame,
                           keys: pl.DataFrame, figures: dict[str, pl.Expr]) -> None:
    """Each (day, device_id) partition of `keys` gets `figures` aggregated over its own rows of `frame` (0 for a
    partition without rows), over the run-wide values of the same names: a device-day's materialization then
    describes that device-day, not the whole run. `context`: an asset's, or the IO manager's step context."""
    if keys.height > MAX_PARTITION_METADATA:
        context.add_asset_metadata({"partition_figures": f"run totals only: {keys.height} partitions > "
                                                         f"{MAX_PARTITION_METADATA}"}, asset_key=asset)
        return
    per = frame.group_by("day", "device_id").agg(**figures) if frame.height else None
    table = keys.join(per, on=["day", "device_id"], how="left") if per is not None else \
        keys.with_columns(*[pl.lit(0).alias(name) for name in figures])
    for row in table.fill_null(0).iter_rows(named=True):
        key = f"{row.pop('day').isoformat()}|{row.pop('device_id')}"
        context.add_asset_metadata({name: int(value) for name, value in row.items()}, asset_key=asset,
                                   partition_key=key)
