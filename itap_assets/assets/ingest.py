"""raw_telemetry: where telemetry enters ITAP — the fleet simulator (`source: simulation`) or CSV/Parquet files
(`source: files`, see core/ingest.py). With files, every file matched is accounted for in `itap.ingest_files`."""


import dagster as dg
import polars as pl

from itap_assets import storage
from itap_assets.core.ingest import IngestError, read_accounted
from itap_assets.core.ingest_accounting import accounts_frame
from itap_assets.core.simulator import simulate_fleet
from itap_assets.assets.common import day_device_asset
from itap_assets.partitions import day_device_pairs
from itap_assets.resources import ItapConfig, Warehouse
from itap_assets.settings import PROJECT_ROOT, Settings
from itap_assets.storage import check_device_id

INGEST_FILES = "ingest_files"


def source_telemetry(settings: Settings, days: list, devices: list[str]) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Telemetry of the given days and devices from the configured source, and the files' accounts (files only).
    A file that cannot be read is a `dg.Failure` with the one-line message (file, line, column), no traceback."""
    if settings.source == "files":
        try:
            read = read_accounted(settings.ingestion, PROJECT_ROOT, days=days, devices=devices,
                                  not_before=settings.start_date)
        except IngestError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        return read.frame, accounts_frame(read.accounts)
    return simulate_fleet(settings.simulation, devices=devices, days=days), None


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


def files_metadata(accounts: pl.DataFrame) -> dict[str, dg.MetadataValue]:
    """Per file: status, records = ingested + rejected, and why a file was skipped or left for the next run."""
    by_status = dict(accounts.group_by("status").len().iter_rows())
    lines = ["| file | status | records | ingested | rejected | detail |", "|---|---|---|---|---|---|"]
    for row in accounts.iter_rows(named=True):
        cells = [row["file"], row["status"], row["records"], row["ingested"], row["rejected"], row["detail"]]
        lines.append("| " + " | ".join("" if c is None else str(c).replace("|", "\\|") for c in cells) + " |")
    return {
        "files_ingested": dg.MetadataValue.int(by_status.get("ingested", 0)),
        "files_incomplete": dg.MetadataValue.int(by_status.get("incomplete", 0)),
        "files_skipped": dg.MetadataValue.int(by_status.get("skipped", 0)),
        "records_in_files": dg.MetadataValue.int(int(accounts["records"].sum() or 0)),
        "rejected_at_ingestion": dg.MetadataValue.int(int(accounts["rejected"].sum() or 0)),
        "files": dg.MetadataValue.md("\n".join(lines)),
    }


@day_device_asset(group_name="ingest", kinds={"polars", "duckdb"})
def raw_telemetry(context: dg.AssetExecutionContext, itap_config: ItapConfig, warehouse: Warehouse) -> pl.DataFrame:
    """Telemetry as it arrives, one row per device and timestamp; sensor values NULL when missing."""
    settings = itap_config.settings
    pairs = day_device_pairs(context.partition_keys)
    for _, device in pairs:
        check_device_id(device)
    days = sorted({d for d, _ in pairs})
    devices = sorted({dev for _, dev in pairs})
    frame, accounts = source_telemetry(settings, days, devices)
    wanted = pl.DataFrame({"day": [d for d, _ in pairs], "device_id": [dev for _, dev in pairs]},
                          schema={"day": pl.Date, "device_id": pl.String})
    frame = frame.join(wanted, on=["day", "device_id"], how="semi")
    meta = telemetry_metadata(frame, list(settings.sensors))
    if accounts is not None and accounts.height:
        storage.replace_partitions(warehouse.database, warehouse.db_schema, INGEST_FILES, accounts,
                                   accounts.select("file"))
        meta.update(files_metadata(accounts))
    context.add_output_metadata(meta)
    return frame
