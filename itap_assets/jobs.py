"""Asset jobs, one per partitioning: a run covers a whole range of partitions (single-run backfills).

Run in this order for a fresh range: telemetry_job (day × device), training_job (device), scoring_job
(day × device), notification_job, then the fleet and evaluation jobs. `make demo` does exactly that.
"""

import dagster as dg

PARTITIONING = "itap/partitioning"

telemetry_job = dg.define_asset_job(
    "telemetry_job",
    selection=dg.AssetSelection.assets("raw_telemetry", "validated", "quarantine", "features"),
    description="Ingest, validate and featurize a range of days × devices in one run.",
    metadata={PARTITIONING: "day_device"},
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("model"),
    description="Train a new model version for a range of devices from their baseline windows.",
    metadata={PARTITIONING: "device"},
)
scoring_job = dg.define_asset_job(
    "scoring_job",
    selection=dg.AssetSelection.assets("scores", "explanations", "device_summaries", "alerts"),
    description="Score, explain and alert a range of days × devices in one run.",
    metadata={PARTITIONING: "day_device"},
)

daily_job = dg.define_asset_job(
    "daily_job",
    selection=dg.AssetSelection.assets(
        "raw_telemetry", "validated", "quarantine", "features", "scores", "explanations", "device_summaries", "alerts"
    ),
    description="Everything partitioned by day × device, ingest to alerts, in one run (devices without a "
                "model are ingested and listed, not scored).",
    metadata={PARTITIONING: "day_device"},
)
notification_job = dg.define_asset_job(
    "notification_job",
    selection=dg.AssetSelection.assets("alert_notifications"),
    description="Deliver every new incident state change to the receivers of the alert rules file.",
    metadata={PARTITIONING: "none"},
)
fleet_job = dg.define_asset_job(
    "fleet_job",
    selection=dg.AssetSelection.assets("fleet_summary"),
    description="Rank the fleet for a range of days.",
    metadata={PARTITIONING: "day"},
)
evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.assets("detection_metrics"),
    description="Measure detection, root cause and alerts against the labels.",
    metadata={PARTITIONING: "none"},
)

# In the order `make demo` runs them; daily_job is telemetry_job + scoring_job for schedules and sensors.
JOBS = [telemetry_job, training_job, scoring_job, notification_job, fleet_job, evaluation_job]
ALL_JOBS = [*JOBS, daily_job]
