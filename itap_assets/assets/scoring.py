"""scores and explanations: each device's rows scored by that device's newest model, flagged points explained
by the same model."""

import dagster as dg
import polars as pl

from itap_assets.assets.common import (
    day_device_asset, device_features, device_slices, keys_by_device, own_partitions,
)
from itap_assets.assets.metadata import markdown_table
from itap_assets.core.explain import explained_families, root_cause_family_map
from itap_assets.core.features import feature_registry
from itap_assets.core.parallel import map_on_cores, ordered_map
from itap_assets.core.scoring import (
    SCORES_SCHEMA,
    explain_device,
    explanations_schema,
    latest_models,
    load_detector,
    score_device,
)
from itap_assets.partitions import day_device_partitions, device_of_day
from itap_assets.resources import ItapConfig, Warehouse, partition_keys_frame

MODEL_INPUT = dg.AssetIn("model", partition_mapping=device_of_day)


def _models_for(frame: pl.DataFrame, model: pl.DataFrame) -> dict[str, dict]:
    """The newest model of every device in `frame`; a device without one is a clear error."""
    latest = latest_models(model)
    missing = sorted(set(frame["device_id"].unique()) - set(latest))
    if missing:
        raise ValueError(f"no model for device(s) {missing}: materialize asset 'model' for them first")
    return latest


@day_device_asset(ins={"model": MODEL_INPUT}, deps=["features"], group_name="detect",
                  kinds={"scikitlearn", "duckdb"})
def scores(context: dg.AssetExecutionContext, model: pl.DataFrame, warehouse: Warehouse) -> pl.DataFrame:
    """Calibrated anomaly score per point (higher = more anomalous; -log10 of the point's tail probability under
    the device's own baseline), its label-free threshold, the smoothed flag and the model version used.

    Features are read one device at a time (a day of a large fleet's features is gigabytes; one device's is
    tens of megabytes)."""
    keys = partition_keys_frame(day_device_partitions, list(context.partition_keys))
    latest = _models_for(keys, model)
    parts = []
    with warehouse.session() as session:
        reader = session.cursor()  # its own thread: the next device is read while this one is scored

        def device_rows(item: tuple[str, pl.DataFrame]) -> tuple[str, pl.DataFrame]:
            device, device_keys = item
            return device, device_features(reader, device_keys)

        for device, rows in ordered_map(device_rows, keys_by_device(keys), workers=1):
            parts.append(score_device(rows, latest[device], load_detector(latest[device])))
    out = pl.concat(parts) if parts else pl.DataFrame(schema=SCORES_SCHEMA)
    per_device = out.group_by("device_id").agg(
        pl.len().alias("points"), pl.col("is_anomaly").sum().alias("flagged"),
        pl.col("score").max().round(2).alias("max_score"), pl.col("model_version").first(),
    ).sort("device_id")
    context.add_output_metadata(
        {
            "rows": out.height,
            "flagged": int(out["is_anomaly"].sum()) if out.height else 0,
            "flagged_share": float(out["is_anomaly"].mean()) if out.height else 0.0,
            "per_device": dg.MetadataValue.md(markdown_table(per_device, limit=100)),
        }
    )
    return out


@day_device_asset(ins={"model": MODEL_INPUT}, deps=["features"], group_name="detect", kinds={"duckdb"})
def explanations(
    context: dg.AssetExecutionContext,
    scores: pl.DataFrame,
    model: pl.DataFrame,
    warehouse: Warehouse,
    itap_config: ItapConfig,
) -> pl.DataFrame:
    """For every flagged point: the flagging model's per-feature attribution as family percentages (sum 100)
    and the top-5 features. Sensor-specific data-quality features count toward their sensor's family."""
    settings = itap_config.settings
    families = root_cause_family_map(feature_registry(settings.sensor_families, settings.features.windows),
                                     settings.sensor_families)
    flagged = scores.filter("is_anomaly").select("ts", "day", "device_id", "score")
    # Only the flagged points' features are read (a few percent of the day), not the whole features table.
    rows = warehouse.query(
        "SELECT f.*, p.score FROM features f JOIN _flagged p USING (device_id, day, ts) ORDER BY device_id, ts",
        frames={"_flagged": flagged},
    )
    latest = _models_for(rows, model) if rows.height else {}
    # Devices are independent and numpy/Polars release the GIL.
    parts = map_on_cores(lambda item: explain_device(item[1], load_detector(latest[item[0]]), families),
                         device_slices(rows))
    out = own_partitions(context, pl.concat(parts)) if parts else \
        pl.DataFrame(schema=explanations_schema(explained_families(list(families), families)))
    counts = out.group_by("top_family").len().sort("len", descending=True)
    context.add_output_metadata(
        {
            "explained_points": out.height,
            "top_family_counts": dg.MetadataValue.json(dict(zip(counts["top_family"].cast(pl.String).fill_null("none"),
                                                                counts["len"]))),
            "examples": dg.MetadataValue.md(markdown_table(out.sort("score", descending=True), limit=5)),
        }
    )
    return out
