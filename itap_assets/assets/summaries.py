"""device_summaries (day × device) and fleet_summary (day): what a shift lead reads first."""

import dagster as dg
import polars as pl

from itap_assets.assets.common import (
    day_device_asset, own_partitions, partitioned_asset, previous_day_inputs, run_keys,
)
from itap_assets.assets.metadata import markdown_table
from itap_assets.core.summaries import device_day_summaries, fleet_day_summary
from itap_assets.partitions import DAY, day_partitions

ALL_DEVICES_OF_DAY = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=DAY)


# Alerts of day D-1 too: its health (against which day D's change is measured) counts that day's incidents, in a
# run of day D alone as in a backfill.
@day_device_asset(ins=previous_day_inputs("scores", "explanations", "alerts"), group_name="report", kinds={"duckdb"})
def device_summaries(context: dg.AssetExecutionContext, scores: pl.DataFrame, explanations: pl.DataFrame,
                     alerts: pl.DataFrame) -> pl.DataFrame:
    """Per device and day: points scored, flagged count and share, mean/p95/max score, dominant families, top
    features, active incidents by severity, a 0–100 health score and its change against the previous day."""
    out = own_partitions(device_day_summaries(scores, explanations, alerts), run_keys(context))
    context.add_output_metadata(
        {
            "rows": out.height,
            "worst": dg.MetadataValue.md(markdown_table(
                out.sort("health").select("day", "device_id", "health", "health_change", "critical_incidents",
                                          "warning_incidents", "flagged", "dominant_family"), limit=10)),
        }
    )
    return out


@partitioned_asset(
    day_partitions,
    ins={"device_summaries": dg.AssetIn(partition_mapping=ALL_DEVICES_OF_DAY),
         "alerts": dg.AssetIn(partition_mapping=ALL_DEVICES_OF_DAY)},
    group_name="report",
    kinds={"duckdb"},
)
def fleet_summary(context: dg.AssetExecutionContext, device_summaries: pl.DataFrame,
                  alerts: pl.DataFrame) -> pl.DataFrame:
    """Per day: devices ranked by health (worst first), counts per dominant family and per alert cause."""
    out = fleet_day_summary(device_summaries, alerts)
    context.add_output_metadata({"days": out.height, "summary": dg.MetadataValue.md(markdown_table(
        out.select("day", "devices", "mean_health", "worst_device", "alerts", "critical_alerts")))})
    return out
