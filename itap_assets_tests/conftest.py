"""Shared fixtures: a temporary settings file, DuckDB file and Dagster instance per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from itap_assets import storage
from itap_assets.partitions import range_tags
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
        return dg.materialize(
            assets,
            instance=self.instance,
            resources=self.resources(),
            tags=range_tags(first, last or first),
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


def run_graph(p: Pipeline, pairs_or_devices, days: list[str] | None = None, *, until: str | None = None) -> list:
    """The whole graph as `make demo` plans it (same jobs, same runs), against this test deployment.

    Give the (day, device) pairs with data, or a list of devices and a list of days (every pair); `until` stops
    after the named job.
    """
    from datetime import date

    from itap_assets.definitions import all_assets
    from itap_assets.demo import run_plan

    if days is not None:
        pairs = [(date.fromisoformat(d), dev) for d in days for dev in pairs_or_devices]
    else:
        pairs = list(pairs_or_devices)
    p.register(*sorted({dev for _, dev in pairs}))
    results = []
    for job, tags in run_plan(pairs, list(p.instance.get_dynamic_partitions("device"))):
        results.append(dg.materialize(all_assets, instance=p.instance, resources=p.resources(),
                                      selection=job.selection, tags=tags))
        if job.name == until:
            break
    return results


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "long_running: many minutes (collected first, see below)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long-running test first: `make test` runs on both cores (pytest-xdist, tests handed out one at a time),
    so it starts at once on one worker while the other works through the rest; started last, it would run alone."""
    items.sort(key=lambda item: item.get_closest_marker("long_running") is None)
