"""model: one per device, learned from that device's own baseline window; the table is the model registry."""

from datetime import timedelta

import dagster as dg
import polars as pl

from itap_assets.assets.common import partitioned_asset
from itap_assets.assets.metadata import markdown_table
from itap_assets.core.features import feature_registry
from itap_assets.core.scoring import (
    BaselineError,
    describe_training,
    fit_device_model,
    latest_models,
    model_record,
    same_model,
)
from itap_assets.partitions import device_partitions
from itap_assets.resources import ItapConfig, Warehouse
from itap_assets.settings import Settings
from itap_assets.storage import check_device_id


def training_rows(warehouse: Warehouse, settings: Settings, device_id: str, columns: list[str]) -> pl.DataFrame:
    """Only the device's training window is read (never its whole, ever-growing history).

    MAINT rows and warm-up rows are left out; quarantined rows never reached `features`. Labelled fault rows are
    left out only when model.training.exclude_labelled_faults is set (plants have no labels).
    """
    tr = settings.model.training
    select = ", ".join(f'f."{c}"' for c in ["ts", "day", "device_id", "state", *columns])
    where = ["f.device_id = ?", "f.state <> 'MAINT'", "NOT f.warmup"]
    params: list = [device_id]
    if tr.first_days is not None:
        first = warehouse.query("SELECT min(day) AS d FROM features WHERE device_id = ?", [device_id])["d"][0]
        if first is None:
            raise BaselineError(f"device {device_id}: no features yet; materialize features for it first")
        where.append("f.day >= ? AND f.day < ?")
        params += [first, first + timedelta(days=tr.first_days)]
    elif tr.start is not None:
        where.append("f.ts >= ? AND f.ts < ?")
        params += [tr.start, tr.end]
    join = ""
    if tr.exclude_labelled_faults:
        join = "LEFT JOIN validated v ON v.device_id = f.device_id AND v.ts = f.ts AND v.day = f.day"
        where.append("v.fault_tag IS NULL")
    limit = f" LIMIT {int(tr.first_samples)}" if tr.first_samples is not None else ""
    return warehouse.query(
        f"SELECT {select} FROM features f {join} WHERE {' AND '.join(where)} ORDER BY f.ts{limit}", params
    )


@partitioned_asset(device_partitions, deps=["features"], group_name="model", kinds={"scikitlearn", "duckdb"})
def model(context: dg.AssetExecutionContext, warehouse: Warehouse, itap_config: ItapConfig) -> pl.DataFrame:
    """Train each device; a fit that differs from the device's newest version (other data window, rows, features,
    parameters or threshold) becomes a new version, an identical refit keeps the version (re-running is
    idempotent). The partition keeps every version (`SELECT * FROM itap.model`)."""
    settings = itap_config.settings
    names = [s.name for s in feature_registry(settings.sensor_families, settings.features.windows)]
    existing = (
        warehouse.query("SELECT * FROM model WHERE device_id IN (SELECT unnest(?))", [list(context.partition_keys)])
        if warehouse.has_table("model") else pl.DataFrame()
    )
    latest = latest_models(existing) if existing.height else {}
    records, summary = [], []
    for device in sorted(context.partition_keys):
        check_device_id(device)
        train = training_rows(warehouse, settings, device, names)
        det, threshold = fit_device_model(device, train, names, settings.model)
        previous = latest.get(device)
        version = previous["version"] + 1 if previous else 1
        record = model_record(device, version, det, threshold, train, settings.model)
        unchanged = same_model(record, previous)
        if not unchanged:
            records.append(record)
        summary.append({"device_id": device, "version": previous["version"] if unchanged else version,
                        "new_version": not unchanged, "rows_used": record["rows_used"],
                        "threshold": round(record["threshold"], 3), "threshold_method": threshold["method"]})
    out = pl.concat([existing, pl.DataFrame(records)], how="diagonal_relaxed") if records else existing
    table = pl.DataFrame(summary)
    context.add_output_metadata(
        {
            "new_versions": len(records),
            "unchanged": len(summary) - len(records),
            "detector": settings.model.detector,
            "training_window": describe_training(settings.model),
            "registry": dg.MetadataValue.md(markdown_table(table, limit=50)),
        }
    )
    return out.sort("device_id", "version")

