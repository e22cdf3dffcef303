"""The one Definitions object: assets, checks, resources, jobs, schedules and sensors of ITAP."""

import dagster as dg

from itap_assets.assets import (alerts, evaluation, features, ingest, model, notifications, scoring, summaries,
                                 validation)
from itap_assets.jobs import ALL_JOBS
from itap_assets.resources import default_resources
from itap_assets.run_recovery import dead_run_cleanup
from itap_assets.schedules import SCHEDULES
from itap_assets.sensors import SENSORS
from itap_assets.settings import ExecutionSettings, load_settings

_STEPS = [ingest, validation, features, model, scoring, summaries, alerts, notifications, evaluation]
# Assets and the asset checks that run as steps of their own (validation's checks run inside its step).
all_assets = [*dg.load_assets_from_modules(_STEPS), *dg.load_asset_checks_from_modules(_STEPS)]


def executor_of(execution: ExecutionSettings) -> dg.ExecutorDefinition:
    """The executor `execution:` of configs/itap.yaml names, preconfigured so a run needs no executor config.
    Both parallel executors start steps in other processes: they need a persistent instance (DAGSTER_HOME) and a
    reconstructable job, as `make demo` and launched runs have."""
    if execution.executor == "multiprocess":
        # Each step's process forks from a server that imported the project once: spawned, every step would
        # import it anew (4-6 s a step). That server keeps the settings of the process that started it.
        forkserver = {"forkserver": {"preload_modules": ["itap_assets.definitions"]}}
        return dg.multiprocess_executor.configured({"max_concurrent": execution.processes, "start_method": forkserver},
                                                   name="multiprocess")
    if execution.executor == "dask":
        from itap_assets.dask_execution import dask_executor  # the scale extra: only Dask deployments need it

        return dask_executor({"existing": {"address": execution.dask_address}} if execution.dask_address else
                             {"local": {"n_workers": execution.processes, "dashboard_address": None}})
    return dg.in_process_executor


defs = dg.Definitions(
    assets=all_assets,
    resources=default_resources(),
    jobs=ALL_JOBS,
    schedules=SCHEDULES,
    sensors=[*SENSORS, dead_run_cleanup],
    executor=executor_of(load_settings().execution),
)
