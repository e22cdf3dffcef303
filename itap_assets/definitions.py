"""The one Definitions object: assets, checks, resources, jobs, schedules and sensors of ITAP."""

import dagster as dg

from itap_assets.assets import (alerts, evaluation, features, ingest, model, notifications, scoring, summaries,
                                 validation)
from itap_assets.jobs import ALL_JOBS
from itap_assets.resources import default_resources
from itap_assets.run_recovery import dead_run_cleanup
from itap_assets.schedules import SCHEDULES
from itap_assets.sensors import SENSORS

_STEPS = [ingest, validation, features, model, scoring, summaries, alerts, notifications, evaluation]
# Assets and the asset checks that run as steps of their own (validation's checks run inside its step).
all_assets = [*dg.load_assets_from_modules(_STEPS), *dg.load_asset_checks_from_modules(_STEPS)]

defs = dg.Definitions(
    assets=all_assets,
    resources=default_resources(),
    jobs=ALL_JOBS,
    schedules=SCHEDULES,
    sensors=[*SENSORS, dead_run_cleanup],
    executor=dg.in_process_executor,
)
