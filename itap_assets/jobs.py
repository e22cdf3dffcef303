"""Asset jobs, one per partitioning: a run covers a whole range of partitions (single-run backfills)."""

import dagster as dg

from itap_assets.partitions import day_device_partitions

# Everything partitioned by day × device up to and including features: one run per backfill range.
telemetry_job = dg.define_asset_job(
    "telemetry_job",
    selection=dg.AssetSelection.assets("raw_telemetry", "validated", "quarantine"),
    partitions_def=day_device_partitions,
    description="Ingest, validate and featurize a range of days × devices in one run.",
)

JOBS = [telemetry_job]
