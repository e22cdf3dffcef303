"""A separate process that materializes assets into a DuckDB file, for crash and concurrency tests.

    python -m itap_assets_tests.reliability.runner CONFIG DB FIRST_KEY LAST_KEY ASSET [ASSET ...] [--loop]

With --loop it re-materializes forever, flipping the simulator seed in CONFIG between runs, so every run writes
different rows into the same partitions (a kill at any moment lands in the middle of some write).
"""

import os
import sys
from pathlib import Path

import dagster as dg
import yaml

from itap_assets.definitions import all_assets
from itap_assets.partitions import range_tags, split_key
from itap_assets.resources import AlertRules, DuckDBPolarsIOManager, ItapConfig, Warehouse, alert_rules_path


def main(argv: list[str]) -> None:
    loop = "--loop" in argv
    config, db, first, last, *assets = [a for a in argv if a != "--loop"]
    resources = {
        "io_manager": DuckDBPolarsIOManager(database=db),
        "warehouse": Warehouse(database=db),
        "itap_config": ItapConfig(path=config),
        "alert_rules": AlertRules(path=alert_rules_path(), config_path=config),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        devices = sorted({split_key(first)[1], split_key(last)[1]})
        instance.add_dynamic_partitions("device", devices)
        run = 0
        while True:
            if loop:
                settings = yaml.safe_load(Path(config).read_text())
                settings["simulation"]["seed"] = run % 2
                # Atomic rewrite: a kill while writing must not leave a half config behind.
                Path(f"{config}.tmp").write_text(yaml.safe_dump(settings))
                os.replace(f"{config}.tmp", config)
            result = dg.materialize(all_assets, selection=assets, instance=instance, resources=resources,
                                    tags=range_tags(first, last))
            print(f"run {run} {'ok' if result.success else 'failed'}", flush=True)
            run += 1
            if not loop:
                break


if __name__ == "__main__":
    main(sys.argv[1:])
