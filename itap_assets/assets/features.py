"""features: the model's input, computed from validated telemetry of day D with day D-1 as history."""

import json

import dagster as dg
import polars as pl

from itap_assets.assets.metadata import markdown_table
from itap_assets.core.drift import PSI_DRIFT, drifted_features
from itap_assets.core.features import device_day_features, feature_registry
from itap_assets.core.scoring import feature_matrix, latest_models
from itap_assets.assets.common import day_device_asset, own_partitions, previous_day_inputs
from itap_assets.partitions import day_device_partitions
from itap_assets.resources import ItapConfig, Warehouse

DRIFTED_SHARE = 0.10  # a device-day drifts when at least this share of its features drift


@day_device_asset(ins=previous_day_inputs("validated"), group_name="model", kinds={"polars", "duckdb"})
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


@dg.asset_check(
    asset=features,
    partitions_def=day_device_partitions,
    description=f"WARN when at least {DRIFTED_SHARE:.0%} of a device-day's features drifted from the device's "
    f"baseline window (population stability index > {PSI_DRIFT}); names the features.",
)
def feature_drift(features: pl.DataFrame, warehouse: Warehouse) -> dg.AssetCheckResult:
    """The day's feature distributions against the baseline profile stored with the device's newest model."""
    if not warehouse.has_table("model"):
        return dg.AssetCheckResult(passed=True, description="no model yet: no baseline to compare with")
    latest = latest_models(warehouse.query("SELECT device_id, version, feature_profile FROM model"))
    rows = []
    for (day, device), part in features.partition_by("day", "device_id", as_dict=True).items():
        if device not in latest:
            continue
        profile = json.loads(latest[device]["feature_profile"])
        names = list(profile)
        drifted = drifted_features(feature_matrix(part, names), names, profile)
        rows.append({"day": day, "device_id": device, "drifted_share": round(len(drifted) / max(len(names), 1), 3),
                     "drifted": len(drifted), "top_features": ", ".join(f"{k} ({v})" for k, v in
                                                                       list(drifted.items())[:5])})
    table = pl.DataFrame(rows, schema={"day": pl.Date, "device_id": pl.String, "drifted_share": pl.Float64,
                                       "drifted": pl.Int64, "top_features": pl.String})
    drifting = table.filter(pl.col("drifted_share") >= DRIFTED_SHARE).sort("drifted_share", descending=True)
    return dg.AssetCheckResult(
        passed=drifting.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{drifting.height} of {table.height} device-days drifted",
        metadata={"drifting_device_days": dg.MetadataValue.md(markdown_table(drifting, limit=20)),
                  "device_days_checked": table.height},
    )
