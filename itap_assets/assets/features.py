"""features: the model's input, computed from validated telemetry of day D with day D-1 as history."""

import dagster as dg
import polars as pl

from itap_assets.core.features import device_day_features, feature_registry
from itap_assets.partitions import day_device_partitions, with_previous_day
from itap_assets.resources import DUCKDB_POOL, ItapConfig, partition_keys_frame


def own_partitions(context: dg.AssetExecutionContext, frame: pl.DataFrame) -> pl.DataFrame:
    """Keep the rows of this run's partitions (inputs also carry day D-1 as context)."""
    keys = partition_keys_frame(day_device_partitions, list(context.partition_keys))
    return frame.join(keys, on=keys.columns, how="semi")


@dg.asset(
    partitions_def=day_device_partitions,
    ins={"validated": dg.AssetIn(partition_mapping=with_previous_day)},
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    group_name="model",
    kinds={"polars", "duckdb"},
)
def features(context: dg.AssetExecutionContext, validated: pl.DataFrame, itap_config: ItapConfig) -> pl.DataFrame:
    """Backward-looking time-window features (float32), continuous across midnight; `warmup` marks rows whose
    history is shorter than the longest window (a device's first minutes)."""
    settings = itap_config.settings
    families = settings.sensor_families
    frame = own_partitions(context, device_day_features(validated, families, settings.features.windows))
    registry = feature_registry(families, settings.features.windows)
    per_family: dict[str, int] = {}
    for spec in registry:
        per_family[spec.family] = per_family.get(spec.family, 0) + 1
    context.add_output_metadata(
        {
            "rows": frame.height,
            "features": len(registry),
            "features_per_family": dg.MetadataValue.json(per_family),
            "warmup_rows": int(frame["warmup"].sum()) if frame.height else 0,
        }
    )
    return frame
