"""features: the model's input, computed from validated telemetry of day D with day D-1 as history."""

import json

import dagster as dg
import numpy as np
import polars as pl

from itap_assets.assets.metadata import add_partition_metadata, markdown_table
from itap_assets.assets.validation import PARTITION_STATUS
from itap_assets.core.drift import PSI_DRIFT, drifted_features
from itap_assets.core.feature_days import features_by_day
from itap_assets.core.features import OUTPUT_KEY_COLUMNS, feature_registry
from itap_assets.core.partition_status import EXCLUDED
from itap_assets.core.scoring import feature_matrix, latest_models
from itap_assets.core.windows import feature_windows, window_plan
from itap_assets.assets.common import (
    day_device_asset, device_features, keys_by_device, previous_day_inputs, run_keys,
)
from itap_assets.partitions import day_device_partitions
from itap_assets.resources import ItapConfig, Warehouse
from itap_assets.storage import FrameChunks

DRIFTED_SHARE = 0.10  # a device-day drifts when at least this share of its features drift


def all_null_features(chunk: pl.DataFrame) -> dict[str, list[str]]:
    """device -> its feature columns that are NULL on every one of its rows in `chunk` (usually none). Only
    columns with at least as many NULLs as the chunk's smallest device are checked per device (a Polars
    column's null count is known without a scan)."""
    if chunk.height == 0:
        return {}
    device = chunk["device_id"]  # a chunk holds whole devices, each one contiguous
    starts = (device != device.shift(1)).fill_null(True).arg_true().to_numpy()
    smallest = int(np.diff(np.append(starts, chunk.height)).min())
    names = [c for c in chunk.columns[len(OUTPUT_KEY_COLUMNS):] if chunk[c].null_count() >= smallest]
    if not names:
        return {}
    nulls = chunk.group_by("device_id").agg(pl.col(c).is_null().all() for c in names)
    return {row["device_id"]: [c for c in names if row[c]] for row in nulls.iter_rows(named=True)
            if any(row[c] for c in names)}


def _seconds(value: float | None) -> str:
    """A duration for people: 1 s, 10 min, 1.5 h."""
    if value is None:
        return "unknown"
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g} s"


def windows_table(plan: pl.DataFrame, nulls: dict[str, list[str]], fixed: bool) -> str:
    """Per device: sample interval, window durations, robust-z and FFT blocks, and what was not produced."""
    rows = []
    for r in plan.iter_rows(named=True):
        missing = nulls.get(r["device_id"], [])
        why = [r["notes"]] if r["notes"] else []
        if missing:
            why.append(f"all NULL here: {', '.join(missing)}")
        rows.append({
            "device": r["device_id"], "rows": r["rows"],
            "sample interval": _seconds(r["interval_s"]) + ("" if r["interval_from"] == "mode"
                                                            else f" ({r['interval_from']})"),
            **({} if fixed else {"short": _seconds(r["short_s"]), "mid": _seconds(r["mid_s"]),
                                 "long": _seconds(r["long_s"])}),
            "robust-z block": _seconds(r["robust_block_s"]), "FFT block": f"{r['fft_block']} samples",
            "not produced / degenerate (why)": "; ".join(why) or "-",
        })
    return markdown_table(pl.DataFrame(rows), limit=100)


def history_starts(warehouse: Warehouse, keys: pl.DataFrame) -> pl.DataFrame | None:
    """(device_id, first_ts): the first stored sample of each device of the run (its history's start)."""
    if keys.height == 0 or not warehouse.has_table("validated"):
        return None
    return warehouse.query(
        "SELECT device_id, min(ts) AS first_ts FROM validated "
        "WHERE device_id IN (SELECT DISTINCT device_id FROM run_keys) GROUP BY device_id",
        frames={"run_keys": keys.select(pl.col("device_id").cast(pl.String))})


def excluded_partitions(warehouse: Warehouse, keys: pl.DataFrame) -> pl.DataFrame:
    """(day, device_id, reason) of the run's partitions `keys` that validation excluded (itap.partition_status)."""
    schema = {"day": pl.Date, "device_id": pl.String, "reason": pl.String}
    if keys.height == 0 or not warehouse.has_table(PARTITION_STATUS):
        return pl.DataFrame(schema=schema)
    return warehouse.query(
        f"SELECT day, device_id, reason FROM {PARTITION_STATUS} WHERE status = ? "
        "AND (day, device_id) IN (SELECT day, device_id FROM run_keys) ORDER BY day, device_id",
        [EXCLUDED], frames={"run_keys": keys},
    ).cast(schema)


@day_device_asset(ins=previous_day_inputs("validated"), group_name="model", kinds={"polars", "duckdb"})
def features(context: dg.AssetExecutionContext, validated: pl.DataFrame, itap_config: ItapConfig,
             warehouse: Warehouse) -> FrameChunks:
    """Backward-looking time-window features (float32), continuous across midnight; `warmup` marks rows whose
    history is shorter than the longest window (a device's first minutes). Written device chunk by device chunk
    as they are computed: a day of a large fleet's features is gigabytes. `features.windows: auto` derives each
    device's windows from its own sample interval; the metadata table `windows` shows them per device. Partitions
    that validation excluded get no rows; their validated rows remain day D-1 history of the next day, as in a
    run of that day alone."""
    settings = itap_config.settings
    families = settings.sensor_families
    windows = feature_windows(settings)
    registry = feature_registry(families, windows)
    per_family: dict[str, int] = {}
    for spec in registry:
        per_family[spec.family] = per_family.get(spec.family, 0) + 1
    fixed = isinstance(windows, tuple)
    metadata = {"features": len(registry), "features_per_family": dg.MetadataValue.json(per_family),
                "warmup_rows": 0,
                "windows_mode": ", ".join(windows) if fixed else "auto (short/mid/long per device sample interval)"}
    if not fixed:
        metadata["not_produced"] = ("<sensor>__std_short and <sensor>__delta_short: the short window is one sample "
                                    "(its std is undefined, its delta 0)")
    keys = run_keys(context)
    skipped = excluded_partitions(warehouse, keys)
    featured = keys.join(skipped, on=["day", "device_id"], how="anti")
    metadata["partitions_excluded"] = skipped.height
    metadata["excluded_partitions"] = dg.MetadataValue.md(markdown_table(skipped, limit=50))

    def own_chunks():
        nulls: dict[str, list[str]] = {}
        counts = []
        for chunk in features_by_day(validated, families, windows, featured,
                                     history_starts(warehouse, keys)):
            metadata["warmup_rows"] += int(chunk["warmup"].sum())
            nulls.update(all_null_features(chunk))
            counts.append(chunk.group_by("day", "device_id").agg(warmup=pl.col("warmup").sum()))
            yield chunk
        per = pl.concat(counts)
        add_partition_metadata(context, "features", per, keys, {"warmup_rows": pl.col("warmup").sum()})
        plan = window_plan(validated, windows, families).join(keys.select("device_id").unique(), on="device_id",
                                                              how="semi")
        metadata["windows"] = dg.MetadataValue.md(windows_table(plan, nulls, fixed))

    return FrameChunks(own_chunks(), metadata)


def drift_rows(features: pl.DataFrame, profiles: dict[str, dict]) -> list[dict]:
    """Per device-day of `features` whose device has a baseline profile: the share of its features that drifted."""
    rows = []
    for (day, device), part in features.partition_by("day", "device_id", as_dict=True).items():
        if device not in profiles:
            continue
        names = list(profiles[device])
        drifted = drifted_features(feature_matrix(part, names), names, profiles[device])
        rows.append({"day": day, "device_id": device, "drifted_share": round(len(drifted) / max(len(names), 1), 3),
                     "drifted": len(drifted), "top_features": ", ".join(f"{k} ({v})" for k, v in
                                                                       list(drifted.items())[:5])})
    return rows


def drift_check_result(rows: list[dict]) -> dg.AssetCheckResult:
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


def baseline_profiles(warehouse: Warehouse) -> dict[str, dict]:
    """Each device's baseline feature profile, stored with its newest model."""
    if not warehouse.has_table("model"):
        return {}
    latest = latest_models(warehouse.query("SELECT device_id, version, feature_profile FROM model"))
    return {device: json.loads(record["feature_profile"]) for device, record in latest.items()}


@dg.asset_check(
    asset=features,
    partitions_def=day_device_partitions,
    description=f"WARN when at least {DRIFTED_SHARE:.0%} of a device-day's features drifted from the device's "
    f"baseline window (population stability index > {PSI_DRIFT}); names the features.",
)
def feature_drift(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> dg.AssetCheckResult:
    """The run's device-days against the baseline profile stored with each device's newest model. Features are
    read one device at a time, only the profiled columns (a day of a large fleet's features is gigabytes)."""
    profiles = baseline_profiles(warehouse)
    if not profiles:
        return dg.AssetCheckResult(passed=True, description="no model yet: no baseline to compare with")
    keys = run_keys(context)
    rows = []
    with warehouse.session() as session:
        for device, device_keys in keys_by_device(keys):
            if device in profiles:
                rows += drift_rows(device_features(session, device_keys, list(profiles[device])), profiles)
    return drift_check_result(rows)
