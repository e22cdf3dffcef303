"""model: one per device, learned from that device's own baseline window; the table is the model registry."""

from collections.abc import Callable

import dagster as dg
import polars as pl

from itap_assets.assets.common import partitioned_asset
from itap_assets.assets.metadata import markdown_table
from itap_assets.core.features import model_feature_specs
from itap_assets.core.frames import sorted_by
from itap_assets.core.parallel import blas_single_thread, default_threads, ordered_map
from itap_assets.core.scoring import (
    describe_training,
    fit_device_model,
    latest_models,
    model_record,
    same_model,
)
from itap_assets.partitions import device_partitions, valid_keys
from itap_assets.resources import ItapConfig, Warehouse, WarehouseSession
from itap_assets.settings import Settings


def training_window_reader(session: WarehouseSession, settings: Settings, devices: list[str], columns: list[str]
                           ) -> Callable[[str], pl.DataFrame]:
    """A function reading one device's training window in time order: the fits of some devices then overlap the
    reads of the next. Only the windows are read (never a device's whole, ever-growing history).

    MAINT rows and warm-up rows are left out; quarantined rows never reached `features`. Labelled fault rows are
    left out only when model.training.exclude_labelled_faults is set (plants have no labels).
    """
    tr = settings.model.training
    select = ", ".join(f'f."{c}"' for c in ["ts", "day", "device_id", "state", *columns])
    eligible = ["f.state <> 'MAINT'", "NOT f.warmup"]
    join = ""
    if tr.exclude_labelled_faults:
        join = "LEFT JOIN validated v ON v.device_id = f.device_id AND v.ts = f.ts AND v.day = f.day"
        eligible.append("v.fault_tag IS NULL")
    ends: dict[str, object] = {}
    if tr.start is not None:
        window = "f.ts >= ? AND f.ts < ?"
    else:
        # Each device's window end, found on narrow columns first.
        if tr.first_days is not None:  # whole days from the device's first day
            window, end, counted = "f.day < ?", f"min(f.day) + INTERVAL {int(tr.first_days)} DAY", ""
        else:  # up to its N-th sample as it arrived (DuckDB's min(x, n) lists the n smallest values): a baseline
            # of "the first 350 samples" is those 350 rows, of which the warm-up and MAINT ones are not fitted
            window, end, counted = "f.ts <= ?", f"list_last(min(f.ts, {int(tr.first_samples)}))", ""
        ends = dict(session.query(
            f"SELECT f.device_id, {end} FROM features f JOIN _devices USING (device_id) {counted} GROUP BY f.device_id",
            frames={"_devices": pl.DataFrame({"device_id": devices}, schema={"device_id": pl.String})},
        ).iter_rows())
    sql = f"SELECT {select} FROM features f {join} WHERE f.device_id = ? AND {window} AND {' AND '.join(eligible)}"

    def read(device: str) -> pl.DataFrame:
        bounds = [tr.start, tr.end] if tr.start is not None else [ends.get(device)]  # no end: no rows
        return sorted_by(session.query(sql, [device, *bounds]), ["ts"])

    return read


@partitioned_asset(device_partitions, deps=["features"], group_name="model", kinds={"scikitlearn", "duckdb"})
def model(context: dg.AssetExecutionContext, warehouse: Warehouse, itap_config: ItapConfig) -> pl.DataFrame:
    """Train each device; a fit that differs from the device's newest version (other data window, rows, features,
    parameters or threshold) becomes a new version, an identical refit keeps the version (re-running is
    idempotent). The partition keeps every version (`SELECT * FROM itap.model`)."""
    settings = itap_config.settings
    names = [s.name for s in model_feature_specs(settings)]
    devices = sorted(valid_keys(device_partitions, context.partition_keys, context.log.warning))
    existing = (
        warehouse.query("SELECT * FROM model WHERE device_id IN (SELECT unnest(?))", [devices])
        if warehouse.has_table("model") else pl.DataFrame()
    )
    latest = latest_models(existing) if existing.height else {}
    records, summary = [], []

    def fit(window: tuple[str, pl.DataFrame]) -> tuple[dict, dict]:
        device, train = window
        det, threshold = fit_device_model(device, train, names, settings.model)
        version = latest[device]["version"] + 1 if device in latest else 1
        return model_record(device, version, det, threshold, train, settings.model), threshold

    with warehouse.session() as session, blas_single_thread():
        reader = session.cursor()  # its own thread: the next device is read while others are fitted
        read = training_window_reader(reader, settings, devices, names)
        windows = ordered_map(lambda device: (device, read(device)), devices, workers=1)
        # devices are independent; numpy releases the GIL for most of a fit
        fitted = list(ordered_map(fit, windows, workers=default_threads()))
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

