"""Shared fixtures: a temporary settings file, DuckDB file and Dagster instance per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from itap_assets import storage
from itap_assets.resources import DB_SCHEMA, AlertRules, DuckDBPolarsIOManager, ItapConfig, Warehouse, alert_rules_path
from itap_assets.settings import Settings, load_settings


def write_config(path: Path, overrides: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(overrides, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Pipeline:
    """One temporary ITAP deployment: config file, database file and Dagster instance."""

    config_path: Path
    db_path: Path
    instance: dg.DagsterInstance
    rules_path: str | None = None

    @property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    def resources(self) -> dict[str, Any]:
        return {
            "io_manager": DuckDBPolarsIOManager(database=str(self.db_path)),
            "warehouse": Warehouse(database=str(self.db_path)),
            "itap_config": ItapConfig(path=str(self.config_path)),
            "alert_rules": AlertRules(path=self.rules_path or alert_rules_path(), config_path=str(self.config_path)),
        }

    def register(self, *devices: str) -> None:
        known = set(self.instance.get_dynamic_partitions("device"))
        self.instance.add_dynamic_partitions("device", [d for d in devices if d not in known])

    def materialize(self, assets, *, first: str, last: str | None = None, selection=None, raise_on_error=True):
        """One run over the rectangle of partitions from `first` to `last` (keys like '2026-01-01|DEV-0001')."""
        tags = {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last or first}
        return dg.materialize(
            assets,
            instance=self.instance,
            resources=self.resources(),
            tags=tags,
            selection=selection,
            raise_on_error=raise_on_error,
        )

    def table(self, name: str, keys=None):
        return storage.read_partitions(self.db_path, DB_SCHEMA, name, keys)

    def sql(self, query: str):
        with storage.connect(self.db_path) as con:
            return con.sql(query).pl()


SMALL_FLEET = {"simulation": {"devices": 3, "days": 5, "sample_interval_s": 60, "healthy_days": 1}}


@pytest.fixture
def make_pipeline(tmp_path: Path) -> Iterator:
    instances = []

    def _make(overrides: dict[str, Any] | None = None) -> Pipeline:
        cfg = write_config(tmp_path / "itap.yaml", overrides if overrides is not None else SMALL_FLEET)
        instance = dg.DagsterInstance.ephemeral()
        instances.append(instance)
        return Pipeline(cfg, tmp_path / "itap.duckdb", instance)

    yield _make
    for instance in instances:
        instance.dispose()


PIPELINE_STAGES = (
    ("day_device", ["raw_telemetry", "validated", "quarantine", "features"]),
    ("device", ["model"]),
    ("day_device", ["scores", "explanations", "device_summaries", "alerts"]),
    ("day", ["fleet_summary"]),
    ("none", ["detection_metrics"]),
)


def run_graph(p: Pipeline, devices: list[str], days: list[str], stages=PIPELINE_STAGES) -> list:
    """The whole graph as `make demo` runs it: one run per partitioning, each over the full range."""
    from itap_assets.definitions import all_assets

    p.register(*devices)
    first = {"day_device": f"{days[0]}|{devices[0]}", "device": devices[0], "day": days[0]}
    last = {"day_device": f"{days[-1]}|{devices[-1]}", "device": devices[-1], "day": days[-1]}
    results = []
    for kind, selection in stages:
        if kind == "none":
            results.append(dg.materialize(all_assets, instance=p.instance, resources=p.resources(),
                                          selection=selection))
        else:
            results.append(p.materialize(all_assets, first=first[kind], last=last[kind], selection=selection))
    return results
