"""model: one per device, learned from that device's own baseline window; the table is the model registry."""

from collections.abc import Callable
from datetime import date, datetime

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
    pinned_version,
    same_model,
)
from itap_assets.core.training import ACCUMULATING, HISTORY_SCHEMA, TOO_SHORT, baseline_status, training_bounds
from itap_assets.partitions import device_partitions, valid_keys
from itap_assets.resources import ItapConfig, Warehouse, WarehouseSession
from itap_assets.settings import Settings, TrainingWindow


class TrainingRun(dg.Config):
    """as_of (YYYY-MM-DD): the newest day a sliding window (model.training.last_days) may end with. The weekly
    retraining sets it to the day before it runs, so re-running that run later fits the same window."""

    as_of: str | None = None


def _fittable(training: TrainingWindow) -> tuple[str, str]:
    """The join and the condition that keep the rows a model is fitted on: MAINT and warm-up rows are left out
    (quarantined rows never reached `features`); labelled fault rows only with exclude_labelled_faults (plants have
    no labels)."""
    eligible = ["f.state <> 'MAINT'", "NOT f.warmup"]
    join = ""
    if training.exclude_labelled_faults:
        join = "LEFT JOIN validated v ON v.device_id = f.device_id AND v.ts = f.ts AND v.day = f.day"
        eligible.append("v.fault_tag IS NULL")
    return join, " AND ".join(eligible)


def baseline_status_of(session: WarehouseSession, settings: Settings, devices: list[str],
                       as_of: date | None = None) -> pl.DataFrame:
    """core.training.baseline_status of `devices` from their stored features: each device's window, its fittable
    rows in it and whether it is ready, still accumulating or too short. Reads narrow columns only."""
    tr = settings.model.training
    nth = f"list_last(min(ts, {int(tr.first_samples)}))" if tr.first_samples is not None else "NULL::TIMESTAMP"
    frames = {"_devices": pl.DataFrame({"device_id": devices}, schema={"device_id": pl.String})}
    history = session.query(
        "SELECT device_id, min(day) AS first_day, max(day) AS last_day, min(ts) AS first_ts, count(*) AS samples, "
        f"{nth} AS nth_ts FROM features JOIN _devices USING (device_id) GROUP BY device_id", frames=frames,
    ).cast(HISTORY_SCHEMA)
    bounds = training_bounds(history, tr, as_of)
    join, eligible = _fittable(tr)
    rows = session.query(
        f"SELECT f.device_id, count(*) AS baseline_rows FROM features f JOIN _bounds b ON f.device_id = b.device_id "
        f"AND f.ts >= b.start AND f.ts < b.end {join} WHERE {eligible} GROUP BY f.device_id",
        frames={"_bounds": bounds.select("device_id", "start", "end")},
    ) if bounds.height else pl.DataFrame(schema={"device_id": pl.String, "baseline_rows": pl.Int64})
    return baseline_status(devices, bounds, rows, settings.model.min_training_rows)


def training_window_reader(session: WarehouseSession, settings: Settings, columns: list[str]
                           ) -> Callable[[str, datetime, datetime], pl.DataFrame]:
    """A function reading one device's fittable rows in [start, end) in time order: the fits of some devices then
    overlap the reads of the next. Only the windows are read (never a device's whole, ever-growing history)."""
    select = ", ".join(f'f."{c}"' for c in ["ts", "day", "device_id", "state", *columns])
    join, eligible = _fittable(settings.model.training)
    sql = f"SELECT {select} FROM features f {join} WHERE f.device_id = ? AND f.ts >= ? AND f.ts < ? AND {eligible}"

    def read(device: str, start: datetime, end: datetime) -> pl.DataFrame:
        return sorted_by(session.query(sql, [device, start, end]), ["ts"])

    return read


@partitioned_asset(device_partitions, deps=["features"], group_name="model", kinds={"scikitlearn", "duckdb"})
def model(context: dg.AssetExecutionContext, config: TrainingRun, warehouse: Warehouse,
          itap_config: ItapConfig) -> pl.DataFrame | None:
    """Train each device whose baseline window is complete; a fit that differs from the device's newest version
    (other data window, rows, features, parameters or threshold) becomes a new version, an identical refit keeps
    the version (re-running is idempotent). A device whose window is still being filled (`accumulating`), or
    that has a model and whose new window is too short (`too_short`: it keeps its version), is skipped and listed
    under `not_trained`, so one device never fails a fleet's training run. The partition keeps every version
    (`SELECT * FROM itap.model`)."""
    settings = itap_config.settings
    names = [s.name for s in model_feature_specs(settings)]
    devices = sorted(valid_keys(device_partitions, context.partition_keys, context.log.warning))
    as_of = date.fromisoformat(config.as_of) if config.as_of else None
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
        status = baseline_status_of(session, settings, devices, as_of)
        kept = (pl.col("status") == ACCUMULATING) | ((pl.col("status") == TOO_SHORT)
                                                      & pl.col("device_id").is_in(list(latest)))
        skipped = status.filter(kept)
        # a first model's too short window is fitted too: the fit fails with what to change
        bounds = {d: (a, b) for d, a, b in status.filter(~kept).select("device_id", "start", "end").iter_rows()}
        reader = session.cursor()  # its own thread: the next device is read while others are fitted
        read = training_window_reader(reader, settings, names)
        windows = ordered_map(lambda device: (device, read(device, *bounds[device])), list(bounds), workers=1)
        # devices are independent; numpy releases the GIL for most of a fit
        fitted = list(ordered_map(fit, windows, workers=default_threads()))
    for device, (record, threshold) in zip(bounds, fitted):
        previous = latest.get(device)
        version = record["version"]
        unchanged = same_model(record, previous)
        if not unchanged:
            records.append(record)
        pin = pinned_version(device, settings.model.pins)
        summary.append({"device_id": device, "version": previous["version"] if unchanged else version,
                        "new_version": not unchanged, "pinned": pin[1] if pin else None,
                        "rows_used": record["rows_used"], "threshold": round(record["threshold"], 3),
                        "threshold_method": threshold["method"]})
    for device, state, rows, needed, progress in skipped.drop("start", "end").rows():
        kept_version = f", keeps version {latest[device]['version']}" if device in latest else ""
        context.log.warning(f"device {device} not trained: baseline {state} ({progress}, {rows} of {needed} "
                            f"rows){kept_version}")
    out = pl.concat([existing, pl.DataFrame(records)], how="diagonal_relaxed") if records else existing
    context.add_output_metadata(
        {
            "new_versions": len(records),
            "unchanged": len(summary) - len(records),
            "accumulating": int((skipped["status"] == ACCUMULATING).sum()),
            "detector": settings.model.detector,
            "training_window": describe_training(settings.model),
            "registry": dg.MetadataValue.md(markdown_table(pl.DataFrame(summary), limit=50)),
            "not_trained": dg.MetadataValue.md(markdown_table(skipped.drop("start", "end"), limit=50)),
        }
    )
    return out.sort("device_id", "version") if out.width else None  # nothing trained yet: nothing to write
