"""model: one per device, learned from that device's own baseline window; the table is the model registry."""

import dagster as dg
import polars as pl

from itap_assets.assets.common import device_slices, partitioned_asset
from itap_assets.assets.metadata import markdown_table
from itap_assets.core.features import feature_registry
from itap_assets.core.frames import sorted_by
from itap_assets.core.parallel import map_on_cores
from itap_assets.core.scoring import (
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


def training_rows(warehouse: Warehouse, settings: Settings, devices: list[str], columns: list[str]) -> pl.DataFrame:
    """The training windows of the given devices, in one query, sorted by device and time. Only those windows are
    read (never a device's whole, ever-growing history).

    MAINT rows and warm-up rows are left out; quarantined rows never reached `features`. Labelled fault rows are
    left out only when model.training.exclude_labelled_faults is set (plants have no labels).
    """
    tr = settings.model.training
    select = ", ".join(f'f."{c}"' for c in ["ts", "day", "device_id", "state", *columns])
    eligible = ["f.state <> 'MAINT'", "NOT f.warmup"]
    params: list = []
    frames = {"_devices": pl.DataFrame({"device_id": devices}, schema={"device_id": pl.String})}
    join = "JOIN _devices USING (device_id)"
    if tr.exclude_labelled_faults:
        join += " LEFT JOIN validated v ON v.device_id = f.device_id AND v.ts = f.ts AND v.day = f.day"
        eligible.append("v.fault_tag IS NULL")
    where = list(eligible)
    if tr.start is not None:
        where.append("f.ts >= ? AND f.ts < ?")
        params += [tr.start, tr.end]
    else:
        # Each device's window end, found on narrow columns first. The constant bound on the latest end lets DuckDB
        # skip the later row groups before any wide row is read (a join condition alone would not).
        if tr.first_days is not None:  # whole days from the device's first day
            column, op, end = "f.day", "<", f"min(f.day) + INTERVAL {int(tr.first_days)} DAY"
            source = "features f JOIN _devices USING (device_id)"
        else:  # up to its N-th eligible sample (DuckDB's min(x, n) lists the n smallest values)
            column, op, end = "f.ts", "<=", f"list_last(min(f.ts, {int(tr.first_samples)}))"
            source = f"features f {join} WHERE {' AND '.join(eligible)}"
        frames["_ends"] = warehouse.query(f"SELECT f.device_id, {end} AS window_end FROM {source} GROUP BY f.device_id",
                                          frames=frames)
        join += " JOIN _ends e USING (device_id)"
        where += [f"{column} {op} e.window_end", f"{column} {op} ?"]
        params.append(frames["_ends"]["window_end"].max())
    return sorted_by(warehouse.query(
        f"SELECT {select} FROM features f {join} WHERE {' AND '.join(where)}", params, frames=frames,
    ), ["device_id", "ts"])


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
    devices = [check_device_id(d) for d in sorted(context.partition_keys)]
    windows = dict(device_slices(training_rows(warehouse, settings, devices, names)))

    def fit(device: str) -> tuple[dict, dict]:
        train = windows.get(device, pl.DataFrame(schema={"ts": pl.Datetime("us")}))
        det, threshold = fit_device_model(device, train, names, settings.model)
        version = latest[device]["version"] + 1 if device in latest else 1
        return model_record(device, version, det, threshold, train, settings.model), threshold

    fitted = map_on_cores(fit, devices)  # devices are independent; numpy releases the GIL for most of a fit
    for device, (record, threshold) in zip(devices, fitted):
        previous = latest.get(device)
        version = record["version"]
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

