"""One deployment's whole graph in a fresh process, as `make demo` runs it but with blocks of devices side by
side (itap_assets.parallel_runs): `python -m itap_assets_tests.scale_out_run` with DAGSTER_HOME, ITAP_CONFIG and
ITAP_DB_PATH set. A process of its own because the Definitions (executor, storage) are read from the settings
once, when itap_assets.definitions is first imported. Prints the stage timings as JSON."""

import json

import dagster as dg

from itap_assets.demo import data_partitions, register_devices
from itap_assets.parallel_runs import concurrent_runs, run_parallel
from itap_assets.settings import load_settings


def main() -> None:
    settings = load_settings()
    pairs = data_partitions(settings)
    with dg.DagsterInstance.get() as instance:
        register_devices(instance, sorted({device for _, device in pairs}))
        timings = run_parallel(instance, pairs, concurrent_runs(settings))
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
