"""The telemetry contract, as pandera Polars schemas built from the settings.

The key columns are fixed (a DataFrameModel); sensor columns and their physical ranges come from the config, so
the contract is extended per deployment. `core.validation` sorts rows by the same rules; these schemas prove that
what leaves validation honours the contract, and give the structural check its column and dtype list.
"""

from collections.abc import Mapping, Sequence
from typing import Annotated

import pandera.polars as pa
import polars as pl

from itap_assets.settings import ID_PATTERN, SensorSpec


def canonical_schema(sensors: Sequence[str]) -> dict[str, pl.DataType]:
    """Column order and Polars dtypes of telemetry as every source delivers it (sensor values NULL when missing)."""
    return {
        "ts": pl.Datetime("us"),
        "day": pl.Date,
        "device_id": pl.String,
        "state": pl.String,
        **{s: pl.Float64 for s in sensors},
        "fault_tag": pl.String,
        "fault_id": pl.String,
    }


class TelemetryKeys(pa.DataFrameModel):
    """Columns every telemetry table carries, whatever its sensors."""

    ts: Annotated[pl.Datetime, "us", None] = pa.Field(nullable=False)
    day: pl.Date = pa.Field(nullable=False)
    device_id: str = pa.Field(nullable=False, str_matches=ID_PATTERN.pattern)
    state: str = pa.Field(nullable=False)
    fault_tag: str = pa.Field(nullable=True)
    fault_id: str = pa.Field(nullable=True)

    class Config:
        strict = False
        ordered = False


def _finite(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col(data.key).is_finite() | pl.col(data.key).is_null())


def _ts_inside_day(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col("ts").dt.date() == pl.col("day"))


def telemetry_contract(sensors: Mapping[str, SensorSpec], states: Sequence[str]) -> pa.DataFrameSchema:
    """Full contract for validated telemetry: keys, known states, finite in-range sensor values (NULL allowed)."""
    base = TelemetryKeys.to_schema()
    sensor_columns = {
        name: pa.Column(
            pl.Float64,
            checks=[pa.Check(_finite, element_wise=False, name="finite"), pa.Check.in_range(spec.min, spec.max)],
            nullable=True,
        )
        for name, spec in sensors.items()
    }
    base = base.update_column("state", checks=[pa.Check.isin(list(states))])
    return pa.DataFrameSchema(
        columns={**base.columns, **sensor_columns},
        checks=[pa.Check(_ts_inside_day, name="ts_inside_day")],
        unique=["device_id", "ts"],
        name="telemetry",
    )


def structure_contract(sensors: Mapping[str, SensorSpec]) -> pa.DataFrameSchema:
    """Columns and dtypes only: what must hold before any row can be judged."""
    columns = {name: pa.Column(pl.Float64, nullable=True) for name in sensors}
    return TelemetryKeys.to_schema().add_columns(columns)
