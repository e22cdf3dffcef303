"""scores and explanations: each device's rows scored by that device's newest (or pinned) model, flagged points
explained by the same model, in one pass over the features; devices without a model are skipped and listed."""

import dagster as dg
import polars as pl

from itap_assets.assets.common import device_features, keys_by_device, run_keys
from itap_assets.assets.metadata import add_partition_metadata, markdown_table
from itap_assets.assets.model import baseline_status_of
from itap_assets.core.explain import explained_families, feature_family_map
from itap_assets.core.features import model_feature_specs
from itap_assets.core.parallel import blas_single_thread, default_threads, ordered_map
from itap_assets.core.scoring import (
    SCORES_SCHEMA,
    PinError,
    explanations_schema,
    load_detector,
    score_and_explain_device,
    score_device,
    scoring_models,
)
from itap_assets.partitions import day_device_partitions, device_of_day
from itap_assets.resources import ItapConfig, Warehouse, WarehouseSession, writer_pool
from itap_assets.settings import Settings

# Models are read through the warehouse, not loaded as an input: before the first training there is no model
# table, and a daily run on day one must still ingest the fleet and list every device as not scored.
MODEL_DEP = dg.AssetDep("model", partition_mapping=device_of_day)


def _models_for(context: dg.AssetExecutionContext, keys: pl.DataFrame, warehouse: Warehouse,
                session: WarehouseSession, settings: Settings) -> tuple[dict[str, dict], pl.DataFrame]:
    """The model each device of the run is scored with (model.pins, else its newest version) and the status of the
    devices without a model: they are skipped, never a failed run for the rest of the fleet; the training sensor
    trains each once its baseline is complete."""
    devices = keys.select("device_id").unique()
    model = session.query("SELECT m.* FROM model m JOIN _devices USING (device_id)", frames={"_devices": devices}) \
        if warehouse.has_table("model") else pl.DataFrame(schema={"device_id": pl.String, "version": pl.Int64})
    chosen, untrained = scoring_models(model, devices["device_id"].to_list(), settings.model.pins)
    waiting = baseline_status_of(session, settings, untrained).drop("start", "end")
    for device, status, rows, needed, progress in waiting.rows():
        context.log.warning(f"device {device} has no model yet and is not scored: baseline {status} ({progress}, "
                            f"{rows} of {needed} rows)")
    return chosen, waiting


@dg.multi_asset(
    outs={
        "scores": dg.AssetOut(
            description="Calibrated anomaly score per point (higher = more anomalous; -log10 of the point's tail "
                        "probability under the device's own baseline), its label-free threshold, the smoothed flag "
                        "and the model version used.",
            kinds={"scikitlearn", "duckdb"}, is_required=False,
        ),
        "explanations": dg.AssetOut(
            description="For every flagged point: the flagging model's per-feature attribution as family "
                        "percentages (sum 100) and the top-5 features. Missing-data and flat-line features count "
                        "toward DataQuality: a dropout is an instrumentation problem, not a machine fault.",
            kinds={"duckdb"}, is_required=False,
        ),
    },
    deps=[MODEL_DEP, "features"],
    partitions_def=day_device_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=writer_pool(),
    group_name="detect",
    can_subset=True,
)
def scoring(context: dg.AssetExecutionContext, warehouse: Warehouse, itap_config: ItapConfig):
    """Score every point and explain the flagged ones in one pass over the features: a day of a large fleet's
    features is gigabytes, read one device at a time, and reading them a second time to explain a few percent of
    the points cost more than the explaining. Either output can be materialized alone (explanations still need
    each device's scores, computed here, not read back)."""
    settings = itap_config.settings
    families = feature_family_map(model_feature_specs(settings))
    keys = run_keys(context)
    with warehouse.session() as session:
        try:
            latest, untrained = _models_for(context, keys, warehouse, session, settings)
        except PinError as exc:
            raise dg.Failure(description=str(exc)) from None
    run_partitions = keys
    keys = keys.filter(pl.col("device_id").is_in(list(latest)))
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    explain = "explanations" in selected

    # The rows before a run's first partition that the evidence window and the k-of-n smoothing look back on:
    # scored with the run's rows and then dropped, so a day scores the same in a daily run as in a backfill.
    smoothing = settings.model.smoothing
    context_rows = max(settings.model.evidence_rows, smoothing.n if smoothing else 1) - 1

    def score_and_explain(item: tuple[str, pl.DataFrame, object]) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        device, rows, first_ts = item
        detector = load_detector(latest[device])
        own = pl.col("ts") >= first_ts
        if not explain:
            return score_device(rows, latest[device], detector).filter(own), None
        points, explanation = score_and_explain_device(rows, latest[device], detector, families)
        return points.filter(own), explanation.filter(own)

    scored, explained = [], []
    with warehouse.session() as session, blas_single_thread():
        reader = session.cursor()  # its own thread: the next device is read while others are scored

        def device_rows(item: tuple[str, pl.DataFrame]) -> tuple[str, pl.DataFrame, object]:
            device, device_keys = item
            rows = device_features(reader, device_keys, context_rows=context_rows)
            before = int((rows["day"] < device_keys["day"].min()).sum())
            return device, rows, rows["ts"][before] if before < rows.height else None

        read = ordered_map(device_rows, keys_by_device(keys), workers=1)
        for points, explanation in ordered_map(score_and_explain, read, workers=default_threads()):
            scored.append(points)
            if explanation is not None:
                explained.append(explanation)
    if "scores" in selected:
        out = pl.concat(scored) if scored else pl.DataFrame(schema=SCORES_SCHEMA)
        add_partition_metadata(context, "scores", out, run_partitions, {
            "rows": pl.len(), "flagged": pl.col("is_anomaly").sum()})
        yield dg.Output(out, output_name="scores", metadata=_scores_metadata(out, untrained))
    if explain:
        out = pl.concat(explained) if explained else \
            pl.DataFrame(schema=explanations_schema(explained_families(list(families), families)))
        add_partition_metadata(context, "explanations", out, run_partitions, {"explained_points": pl.len()})
        yield dg.Output(out, output_name="explanations", metadata=_explanations_metadata(out))


def _scores_metadata(out: pl.DataFrame, untrained: pl.DataFrame) -> dict:
    per_device = out.group_by("device_id").agg(
        pl.len().alias("points"), pl.col("is_anomaly").sum().alias("flagged"),
        pl.col("score").max().round(2).alias("max_score"), pl.col("model_version").first(),
    ).sort("device_id")
    return {
        "rows": out.height,
        "flagged": int(out["is_anomaly"].sum()) if out.height else 0,
        "flagged_share": float(out["is_anomaly"].mean()) if out.height else 0.0,
        "per_device": dg.MetadataValue.md(markdown_table(per_device, limit=100)),
        "devices_without_model": untrained.height,
        "not_scored": dg.MetadataValue.md(markdown_table(untrained, limit=100)),
    }


def _explanations_metadata(out: pl.DataFrame) -> dict:
    counts = out.group_by("top_family").len().sort("len", descending=True)
    return {
        "explained_points": out.height,
        "top_family_counts": dg.MetadataValue.json(dict(zip(counts["top_family"].cast(pl.String).fill_null("none"),
                                                            counts["len"]))),
        "examples": dg.MetadataValue.md(markdown_table(out.top_k(5, by="score"), limit=5)),
    }
