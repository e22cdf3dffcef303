"""raw_telemetry: where telemetry enters ITAP — the fleet simulator (`source: simulation`) or CSV/Parquet files
(`source: files`, see core/ingest.py)."""


import dagster as dg
import polars as pl

from itap_assets.core.ingest import read_telemetry
from itap_assets.core.simulator import simulate_fleet
from itap_assets.assets.common import day_device_asset
from itap_assets.partitions import day_device_pairs
from itap_assets.resources import ItapConfig
from itap_assets.settings import PROJECT_ROOT, Settings
from itap_assets.storage import check_device_id


def source_telemetry(settings: Settings, days: list, devices: list[str]) -> pl.DataFrame:
    """Telemetry of the given days and devices from the configured source."""
    if settings.source == "files":
        return read_telemetry(settings.ingestion, PROJECT_ROOT, days=days, devices=devices)
    return simulate_fleet(settings.simulation, devices=devices, days=days)


def telemetry_metadata(frame: pl.DataFrame, sensors: list[str]) -> dict[str, dg.MetadataValue]:
    """Row count, time span and missing rate per sensor: what an engineer checks first."""
    meta: dict[str, dg.MetadataValue] = {"rows": dg.MetadataValue.int(frame.height)}
    if frame.height:
        meta["first_ts"] = dg.MetadataValue.text(str(frame["ts"].min()))
        meta["last_ts"] = dg.MetadataValue.text(str(frame["ts"].max()))
        missing = frame.select(pl.col(s).is_null().mean() for s in sensors if s in frame.columns).row(0, named=True)
        meta["missing_rate"] = dg.MetadataValue.json({k: round(v, 5) for k, v in missing.items()})
        meta["devices"] = dg.MetadataValue.int(frame["device_id"].n_unique())
    return meta


@day_device_asset(group_name="ingest", kinds={"polars", "duckdb"})
def raw_telemetry(context: dg.AssetExecutionContext, itap_config: ItapConfig) -> pl.DataFrame:
    """Telemetry as it arrives, one row per device and timestamp; sensor values NULL when missing."""
    settings = itap_config.settings
    pairs = day_device_pairs(context.partition_keys)
    for _, device in pairs:
        check_device_id(device)
    days = sorted({d for d, _ in pairs})
    devices = sorted({dev for _, dev in pairs})
    frame = source_telemetry(settings, days, devices)
    wanted = pl.DataFrame({"day": [d for d, _ in pairs], "device_id": [dev for _, dev in pairs]})
    frame = frame.join(wanted, on=["day", "device_id"], how="semi")
    context.add_output_metadata(telemetry_metadata(frame, list(settings.sensors)))
    return frame
