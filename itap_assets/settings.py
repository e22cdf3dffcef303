"""Typed settings for `configs/itap.yaml`.

Loaded once, validated with pydantic (unknown keys are errors, so a typo fails at load instead of being ignored),
and free of Dagster imports so pure code and tests can use it directly.
"""

from __future__ import annotations

import math
import os
import re
from datetime import date, datetime
from pathlib import Path
from typing import Literal

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "itap.yaml"
DEFAULT_DB_PATH = PROJECT_ROOT / "data" / "itap.duckdb"

# DESIGN.md: ^[A-Za-z0-9._-]{1,64}$, and the first character must be a letter or digit (so "..", ".x" are refused).
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def checked_id(value: str) -> str:
    """A name that ends up in ids and messages (alert rules, receivers): the id pattern, or a ValueError."""
    if not ID_PATTERN.fullmatch(value):
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '-' (starting alphanumeric)")
    return value
FAMILIES = ("Temperature", "Vibration", "Voltage", "Current", "RPM")
PIN_PATTERN = re.compile(r"[A-Za-z0-9._\-*?\[\]!]{1,64}")
RESERVED_COLUMNS = {"ts", "day", "device_id", "state", "fault_tag", "fault_id", "warmup"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SensorSpec(Strict):
    """One sensor column: its family (drives explanations and rules) and its physical range (drives validation)."""

    family: str
    min: float
    max: float
    unit: str = ""

    @model_validator(mode="after")
    def _range(self) -> SensorSpec:
        if not self.min < self.max:
            raise ValueError(f"min={self.min} must be below max={self.max}")
        return self


DEFAULT_SENSORS = {
    "temp_c": SensorSpec(family="Temperature", min=-40.0, max=250.0, unit="°C"),
    "vibration_g": SensorSpec(family="Vibration", min=0.0, max=50.0, unit="g"),
    "voltage_v": SensorSpec(family="Voltage", min=0.0, max=1000.0, unit="V"),
    "current_a": SensorSpec(family="Current", min=0.0, max=500.0, unit="A"),
    "rpm": SensorSpec(family="RPM", min=0.0, max=10000.0, unit="rpm"),
}


class SimulationSettings(Strict):
    devices: int = Field(10, ge=1, le=100_000)
    start: date = date(2026, 1, 1)
    days: int = Field(2, ge=1)
    sample_interval_s: float = Field(10.0, gt=0)
    seed: int = 7
    healthy_days: int = Field(
        1, ge=0, description="Fault-free commissioning days at the start: the baseline a plant would train on."
    )
    fault_rate: float = Field(2.0, ge=0, description="Expected fault episodes per device-day after the healthy days.")


class PartitionSettings(Strict):
    start_date: date | None = None


class ValidationSettings(Strict):
    max_quarantine_share: float = Field(0.05, ge=0, le=1)
    max_missing_rate: float = Field(0.2, ge=0, le=1, description="WARN check: missing rate per sensor above this.")
    states: tuple[str, ...] = ("RUN", "IDLE", "MAINT")
    duplicates: Literal["quarantine_both", "keep_first", "keep_last"] = Field(
        "quarantine_both", description="Conflicting versions of one (device_id, ts): quarantine them all, or keep "
                                       "the one read first or last (core/validation.py DUPLICATE_POLICIES).")


class FeatureSettings(Strict):
    windows: Literal["auto"] | tuple[str, ...] = Field(
        "auto",
        description="auto: short/mid/long windows of 1/10/60 samples of each device's own sampling interval (long "
                    "at most a tenth of model.training's baseline); or fixed durations such as [1m, 5m, 30m].",
    )

    @field_validator("windows", mode="before")
    @classmethod
    def _windows(cls, v: object) -> object:
        if isinstance(v, str):
            if v != "auto":
                raise ValueError(f"windows must be auto or a list of durations such as [1m, 5m, 30m], got {v!r}")
            return v
        if isinstance(v, (list, tuple)):
            if not v:
                raise ValueError("windows: give at least one window (or auto)")
            for w in v:
                if not isinstance(w, str) or not re.fullmatch(r"[1-9][0-9]*(s|m|h)", w):
                    raise ValueError(f"window {w!r} must look like 30s, 5m or 1h")
        return v


class TrainingWindow(Strict):
    first_days: int | None = Field(None, ge=1)
    first_samples: int | None = Field(None, ge=1, description="The device's first N samples (warm-up and MAINT rows "
                                                            "among them are not fitted).")
    last_days: int | None = Field(None, ge=1, description="Sliding: the N days up to the device's newest day "
                                                         "(or the run's as_of day), so a retraining on newer data "
                                                         "makes a new version.")
    start: datetime | None = None
    end: datetime | None = None
    exclude_labelled_faults: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> TrainingWindow:
        kinds = [self.first_days is not None, self.first_samples is not None, self.last_days is not None,
                 self.start is not None]
        if sum(kinds) != 1:
            raise ValueError("give exactly one of first_days, first_samples, last_days or start/end")
        if (self.start is None) != (self.end is None):
            raise ValueError("start and end go together")
        if self.start is not None and self.end is not None and not self.start < self.end:
            raise ValueError("start must be before end")
        return self


class ThresholdSettings(Strict):
    method: Literal["pot", "quantile"] = "pot"
    quantile: float = Field(0.999, gt=0.5, lt=1)
    tail_quantile: float = Field(0.98, gt=0.5, lt=1, description="POT: where the tail starts.")
    risk: float = Field(3e-4, gt=0, lt=0.1, description="POT: target exceedance probability per point.")


class SmoothingSettings(Strict):
    k: int = Field(2, ge=1)
    n: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _k_le_n(self) -> SmoothingSettings:
        if self.k > self.n:
            raise ValueError(f"k={self.k} must not exceed n={self.n}")
        return self


class ModelSettings(Strict):
    training: TrainingWindow = TrainingWindow(first_days=1)
    detector: Literal["iforest", "pca", "ensemble"] = "pca"
    threshold: ThresholdSettings = ThresholdSettings()
    smoothing: SmoothingSettings | None = SmoothingSettings()
    min_training_rows: int = Field(200, ge=10)
    evidence_rows: int = Field(
        20, ge=0, le=100_000,
        description="Window (rows) of the evidence statistics: the mean calibrated score of the last N rows; 0 = off.")
    min_effective_samples: float = Field(
        30.0, ge=0, le=1e6,
        description="PCA learns only features with at least this many effectively independent baseline samples "
                    "(the shrinkage Mahalanobis distance sees all); 0 = PCA sees every continuous feature.")
    seed: int = 0
    pins: dict[str, int] = Field(
        default_factory=dict,
        description="Device glob -> model version scoring uses (pin or roll back); the first matching pattern in "
                    "file order wins, unpinned devices use their newest version.")

    @field_validator("pins")
    @classmethod
    def _pins(cls, v: dict[str, int]) -> dict[str, int]:
        for pattern, version in v.items():
            if not PIN_PATTERN.fullmatch(pattern):
                raise ValueError(f"pin pattern {pattern!r} must be a device id or a glob of one (*, ?, [...])")
            if isinstance(version, bool) or version < 1:
                raise ValueError(f"pin {pattern!r}: version {version!r} must be a whole number from 1")
        return v


class IngestionSettings(Strict):
    """`source: files`: how to read historian / test-rig exports (CSV or Parquet) into raw_telemetry."""

    path: str | list[str] = "data/incoming/**/*"
    delimiter: str = Field(",", min_length=1, max_length=1)
    decimal: Literal[".", ","] = "."
    encoding: Literal["utf8", "utf8-lossy", "latin1", "cp1252"] = "utf8"
    timestamp_column: str = "ts"
    timestamp_format: str | None = None
    timezone: str = "UTC"
    device_column: str | None = None
    device_from_path: str | None = None
    columns: dict[str, str] = Field(default_factory=dict, description="source column -> sensor name")
    families: dict[str, str] = Field(default_factory=dict, description="sensor name -> family")
    state_column: str | None = None
    default_state: str = "RUN"
    label_column: str | None = None
    label_mapping: dict[str, str | None] | None = None
    settle_seconds: float = Field(
        2.0, ge=0, le=86_400, allow_inf_nan=False,
        description="A file modified less than this long ago may still be written: it is left for the next run.")
    unterminated_settle_seconds: float = Field(
        300.0, ge=0, le=86_400, allow_inf_nan=False,
        description="A CSV without a final line break is left for the next run while it is younger than this; "
                    "older, with all its fields, its last line is read as written (its writer is gone).")
    follow_symlinks: bool = Field(
        False, description="Read files reached through a symbolic link (off: a link could point anywhere).")

    @field_validator("label_mapping", mode="before")
    @classmethod
    def _label_keys_as_text(cls, v: object) -> object:
        """Labels are compared as text: `{0: null, 1: fault}` in YAML means the cells "0" and "1"."""
        return {str(k): val for k, val in v.items()} if isinstance(v, dict) else v

    @field_validator("columns")
    @classmethod
    def _sensor_names(cls, v: dict[str, str]) -> dict[str, str]:
        reserved = sorted(set(v.values()) & RESERVED_COLUMNS)
        if reserved:
            raise ValueError(f"sensor name(s) {reserved} are reserved for ITAP's own columns")
        return v

    @property
    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {v!r} (use an IANA name such as Europe/Berlin)") from exc
        return v

    @field_validator("device_from_path")
    @classmethod
    def _device_regex(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            pattern = re.compile(v)
        except re.error as exc:
            raise ValueError(f"device_from_path is not a valid regex: {exc}") from exc
        if "device" not in pattern.groupindex:
            raise ValueError("device_from_path needs a named group (?P<device>...)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> IngestionSettings:
        if (self.device_column is None) == (self.device_from_path is None):
            raise ValueError("give exactly one of device_column or device_from_path")
        if not self.columns:
            raise ValueError("columns must map at least one source column to a sensor name")
        sensors = list(self.columns.values())
        if len(set(sensors)) != len(sensors):
            raise ValueError("columns maps two source columns to the same sensor")
        unmapped = sorted(set(sensors) - set(self.families))
        if unmapped:
            raise ValueError(f"families lacks a family for sensor(s) {unmapped}")
        extra = sorted(set(self.families) - set(sensors))
        if extra:
            raise ValueError(f"families names sensor(s) {extra} that no column maps to")
        if self.label_mapping is not None and self.label_column is None:
            raise ValueError("label_mapping needs label_column")
        return self


class EvaluationSettings(Strict):
    """What the labels mean for `detection_metrics` (labels never reach detection). Without this section the
    simulator's own fault types are used with `source: simulation`, and with files every tag is critical and no
    root cause is graded."""

    critical_tags: tuple[str, ...] | None = Field(None, description="Tags that count as critical; null = all.")
    tag_families: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Tag -> the sensor families that are its right root cause (a sensor "
                                          "dropout's is DataQuality).")
    tag_routes: dict[str, str] = Field(
        default_factory=dict, description="Tag -> the team (alert route) its incident must reach.")


class AlertSettings(Strict):
    """What of the source reaches the alert rules besides the scores and explanations."""

    point_tags: Literal["fault_tag"] | None = Field(
        None, description="Route by the source's tag of each flagged point (the column ingestion.label_column "
                          "maps to fault_tag) when it holds operational tags such as a historian alarm code. Leave "
                          "it unset when that column holds evaluation labels: they would leak into the alerts.")


class StorageSettings(Strict):
    """Where the asset tables live (docs/deployment.md). `duckdb`: one DuckDB file (ITAP_DB_PATH), one writer at a
    time; the embedded default. `parquet`: one Parquet file per asset partition under `root` (a local path or an
    fsspec URL such as s3://bucket/itap), written atomically so writers never contend, with a DuckDB catalog file
    (ITAP_DB_PATH) of views over them for SQL."""
    mode: Literal["duckdb", "parquet"] = "duckdb"
    root: str | None = Field(None, description="Parquet mode: directory or URL of the Parquet tree")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="fsspec options for `root` (e.g. endpoint_url for an S3-compatible store); "
                                          "credentials belong in the environment, not here")

    @model_validator(mode="after")
    def _parquet_needs_root(self) -> StorageSettings:
        if self.mode == "parquet" and not self.root:
            raise ValueError("storage.mode: parquet needs storage.root (a directory or a URL such as s3://bucket/itap)")
        return self


class ExecutionSettings(Strict):
    """How a run executes its steps. `in_process` (default) runs them one after another in the run's process;
    `multiprocess` runs up to `processes` steps at once on this machine; `dask` submits them to a Dask cluster
    (`dask_address`, or a LocalCluster of `processes` workers when unset). Parallel steps only help with
    storage.mode: parquet: in the DuckDB mode the writing steps share one pool slot."""
    executor: Literal["in_process", "multiprocess", "dask"] = "in_process"
    processes: int = Field(2, ge=1, le=256)
    dask_address: str | None = None


class Settings(Strict):
    storage: StorageSettings = StorageSettings()
    execution: ExecutionSettings = ExecutionSettings()
    source: Literal["simulation", "files"] = "simulation"
    partitions: PartitionSettings = PartitionSettings()
    simulation: SimulationSettings = SimulationSettings()
    ingestion: IngestionSettings | None = None
    sensors: dict[str, SensorSpec] = Field(default_factory=lambda: dict(DEFAULT_SENSORS))
    validation: ValidationSettings = ValidationSettings()
    features: FeatureSettings = FeatureSettings()
    model: ModelSettings = ModelSettings()
    evaluation: EvaluationSettings | None = None
    alerts: AlertSettings = AlertSettings()

    @model_validator(mode="before")
    @classmethod
    def _sensors_from_ingestion(cls, data: object) -> object:
        """With `source: files` the sensor set is whatever the column mapping declares; a `sensors:` section may
        still give physical ranges for some of them (the others are only checked to be finite)."""
        if not isinstance(data, dict) or data.get("source") != "files" or not isinstance(data.get("ingestion"), dict):
            return data
        families = data["ingestion"].get("families") or {}
        given = data.get("sensors") or {}
        sensors = {}
        for name, family in families.items():
            spec = dict(given.get(name) or {})
            spec["family"] = family
            spec.setdefault("min", -math.inf)
            spec.setdefault("max", math.inf)
            sensors[name] = spec
        unknown = sorted(set(given) - set(families))
        if unknown:
            raise ValueError(f"sensors {unknown} are not produced by ingestion.columns")
        return {**data, "sensors": sensors}

    @model_validator(mode="after")
    def _source_needs_ingestion(self) -> Settings:
        if self.source == "files" and self.ingestion is None:
            raise ValueError("source: files needs an ingestion: section")
        return self

    @field_validator("sensors")
    @classmethod
    def _sensor_names(cls, v: dict[str, SensorSpec]) -> dict[str, SensorSpec]:
        for name in v:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", name):
                raise ValueError(f"sensor name {name!r} must be lower_snake_case")
        return v

    @property
    def start_date(self) -> date:
        return self.partitions.start_date or self.simulation.start

    @property
    def sensor_families(self) -> dict[str, str]:
        return {name: spec.family for name, spec in self.sensors.items()}


class SettingsError(ValueError):
    """A config file that cannot be used; the message names the file and the field."""


def config_path() -> Path:
    return Path(os.environ.get("ITAP_CONFIG", DEFAULT_CONFIG))


def db_path() -> Path:
    return Path(os.environ.get("ITAP_DB_PATH", DEFAULT_DB_PATH))


def load_settings(path: Path | str | None = None) -> Settings:
    """Read and validate a settings file (safe YAML only)."""
    path = Path(path) if path is not None else config_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML (only plain YAML is accepted): {exc}") from exc
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"{path}: {problems}") from exc
