"""Split raw telemetry into rows the pipeline may use and a quarantine that keeps every other row with its reason.

Nothing is dropped: rows in = validated + quarantined. Exact duplicate rows keep one copy in `validated` and the
extra copies go to quarantine as `duplicate_exact` (harmless, so they do not count against the quarantine limit).
Conflicting versions of one timestamp follow `validation.duplicates` (DUPLICATE_POLICIES): by default all are
quarantined (`duplicate_conflict`) and count as one rejected row against the limit: one sample is lost, however
many versions of it arrived (a clock set back at a DST switch re-sends a whole hour onto one timestamp).
`keep_first` / `keep_last` keep the version read first / last (files in name order, lines in file order) and
quarantine the others as `duplicate_not_kept`, harmless: no sample is lost.
Missing sensor values (NULL) are not a rejection: dropout is a fault the detector must see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandera.polars as pa
import polars as pl

from itap_assets.core.frames import sorted_by
from itap_assets.core.schemas import canonical_schema, structure_contract, telemetry_contract
from itap_assets.settings import ID_PATTERN, SensorSpec

KEY_COLUMNS = ("ts", "day", "device_id", "state")
LABEL_COLUMNS = ("fault_tag", "fault_id")

# Reason codes, in the order they are judged (the first that applies is the row's reason).
REASONS = {
    "structure": "the file or table lacks a required column or has one of the wrong type",
    "null_key": "ts, day or device_id is NULL",
    "bad_device_id": f"device_id does not match {ID_PATTERN.pattern}",
    "ts_outside_day": "ts does not fall on the row's day partition (UTC)",
    "unknown_state": "state is not one of the configured states",
    "bad_type": "a sensor value is not a number",
    "non_finite": "a sensor value is NaN or ±inf",
    "out_of_range": "a sensor value is outside its configured physical range",
    "duplicate_conflict": "several rows for one (device_id, ts) with different values",
    "duplicate_exact": "an exact copy of another row (one copy is kept)",
    "duplicate_not_kept": "another version of this (device_id, ts) was kept (validation.duplicates: keep_first or "
                          "keep_last)",
}
HARMLESS_REASONS = ("duplicate_exact", "duplicate_not_kept")
# validation.duplicates: what becomes of conflicting versions of one (device_id, ts).
DUPLICATE_POLICIES = {
    "quarantine_both": "every version is quarantined (duplicate_conflict); the sample counts once as rejected",
    "keep_first": "the version read first is kept, the others are quarantined (duplicate_not_kept, harmless)",
    "keep_last": "the version read last is kept, the others are quarantined (duplicate_not_kept, harmless)",
}


def counts_as_rejected() -> pl.Expr:
    """Per quarantine row: does it count against validation.max_quarantine_share? Harmless exact copies do not;
    of the conflicting versions of one (device_id, ts), only the first does — one sample is lost, however many
    versions of it arrived. Use over a whole quarantine frame or per partition (group_by day, device_id)."""
    reason = pl.col("reason")
    extra_version = (reason == "duplicate_conflict") & ~pl.struct("device_id", "ts", "reason").is_first_distinct()
    return ~reason.is_in(HARMLESS_REASONS) & ~extra_version


@dataclass
class ValidationResult:
    validated: pl.DataFrame
    quarantine: pl.DataFrame
    structure_errors: list[str] = field(default_factory=list)

    @property
    def reason_counts(self) -> dict[str, int]:
        counts = self.quarantine.group_by("reason").len().sort("reason")
        return dict(zip(counts["reason"].to_list(), counts["len"].to_list()))

    @property
    def rejected_share(self) -> float:
        """Rejected share of all rows: harmless exact duplicates not counted, the conflicting versions of one
        timestamp counted once (`counts_as_rejected`)."""
        total = self.validated.height + self.quarantine.height
        rejected = self.quarantine.filter(counts_as_rejected()).height
        return rejected / total if total else 0.0


def structure_errors(raw: pl.DataFrame, sensors: Mapping[str, SensorSpec]) -> list[str]:
    """Missing or mistyped columns, one readable line each (empty when the structure is sound).

    Sensor columns may arrive as integers (cast losslessly) or text (judged per row as `bad_type`).
    """
    errors = []
    try:
        structure_contract(sensors).validate(_cast_sensors(raw.head(0), sensors), lazy=True)
    except pa.errors.SchemaErrors as exc:
        for case in exc.failure_cases.iter_rows(named=True):
            if case["check"] == "column_in_dataframe":
                errors.append(f"missing column '{case['failure_case']}'")
            else:
                errors.append(f"column '{case['column']}' has type {case['failure_case']}, expected {case['check']}")
    return errors


def _cast_sensors(raw: pl.DataFrame, sensors: Mapping[str, SensorSpec]) -> pl.DataFrame:
    casts = []
    for name in sensors:
        if name not in raw.columns:
            continue
        dtype = raw.schema[name]
        if dtype.is_numeric() or dtype == pl.Null:
            casts.append(pl.col(name).cast(pl.Float64))
        elif dtype == pl.String:
            casts.append(pl.col(name).str.strip_chars().cast(pl.Float64, strict=False))
    casts += [pl.col(c).cast(pl.String) for c in LABEL_COLUMNS if c in raw.columns and raw.schema[c] == pl.Null]
    return raw.with_columns(casts) if casts else raw


def _with_labels(raw: pl.DataFrame) -> pl.DataFrame:
    return raw.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in LABEL_COLUMNS if c not in raw.columns)


def _coerced(raw: pl.DataFrame, sensors: Sequence[str]) -> pl.DataFrame:
    """Best-effort canonical columns for rows that cannot be validated (unreadable values become NULL)."""
    return raw.select(
        (pl.col(c).cast(t, strict=False) if c in raw.columns else pl.lit(None, dtype=t)).alias(c)
        for c, t in canonical_schema(sensors).items()
    )


def _raw_json(columns: Sequence[str], names: Sequence[str]) -> pl.Expr:
    """The row as it arrived, so a quarantined value is never lost even when it could not be typed."""
    fields = [pl.col(c).cast(pl.String).alias(n) for c, n in zip(columns, names)]
    return pl.struct(fields).struct.json_encode().alias("raw_row")


def _reason_expr(sensors: Mapping[str, SensorSpec], states: Sequence[str], text_sensors: Sequence[str]) -> tuple[
    pl.Expr, pl.Expr
]:
    """The first failing rule per row (reason) and what exactly failed (detail)."""
    names = list(sensors)
    bad_type = [pl.col(f"__orig_{s}").is_not_null() & pl.col(s).is_null() for s in text_sensors]
    non_finite = [pl.col(s).is_nan() | pl.col(s).is_infinite() for s in names]
    out_of_range = [
        pl.col(s).is_finite() & ((pl.col(s) < spec.min) | (pl.col(s) > spec.max)) for s, spec in sensors.items()
    ]

    def which(flags: list[pl.Expr], cols: list[str], what: str) -> pl.Expr:
        parts = [pl.when(f).then(pl.format(f"{c}={{}}", pl.col(f"__orig_{c}") if what == "bad_type" else pl.col(c)))
                 for f, c in zip(flags, cols)]
        return pl.concat_str(parts, separator="; ", ignore_nulls=True)

    rules: list[tuple[str, pl.Expr, pl.Expr]] = [
        ("null_key", pl.any_horizontal(pl.col(c).is_null() for c in ("ts", "day", "device_id")),
         pl.lit("NULL in a key column")),
        ("bad_device_id", ~pl.col("device_id").str.contains(ID_PATTERN.pattern),
         pl.format("device_id={}", pl.col("device_id"))),
        ("ts_outside_day", pl.col("ts").dt.date() != pl.col("day"),
         pl.format("ts={} day={}", pl.col("ts"), pl.col("day"))),
        ("unknown_state", pl.col("state").is_null() | ~pl.col("state").is_in(list(states)),
         pl.format("state={}", pl.col("state").fill_null("NULL"))),
    ]
    if text_sensors:
        rules.append(("bad_type", pl.any_horizontal(bad_type), which(bad_type, list(text_sensors), "bad_type")))
    rules += [
        ("non_finite", pl.any_horizontal(non_finite), which(non_finite, names, "")),
        ("out_of_range", pl.any_horizontal(out_of_range), which(out_of_range, names, "")),
    ]
    reason = pl.lit(None, dtype=pl.String)
    detail = pl.lit(None, dtype=pl.String)
    for code, cond, text in reversed(rules):
        reason = pl.when(cond.fill_null(False)).then(pl.lit(code)).otherwise(reason)
        detail = pl.when(cond.fill_null(False)).then(text).otherwise(detail)
    return reason.alias("reason"), detail.alias("detail")


def _judge_duplicates(rows: pl.DataFrame, value_cols: list[str], policy: str) -> pl.DataFrame:
    """Rows sharing (device_id, ts): exact copies keep their first; conflicting versions follow `policy`
    (DUPLICATE_POLICIES)."""
    group = ("device_id", "ts")
    values = pl.struct(value_cols)
    # Window results become columns before they are combined or formatted: polars 1.44 panics ("assertion failed:
    # i < self.len()") formatting a window expression together with other columns over a frame of several chunks.
    judged = rows.with_columns(
        pl.int_range(pl.len()).over(*group, *value_cols).alias("__copy"),
        values.n_unique().over(*group).alias("__variants"),
        pl.len().over(*group).alias("__rows"),
    )
    conflict = pl.col("__variants") > 1
    if policy == "quarantine_both":
        reason = pl.when(conflict).then(pl.lit("duplicate_conflict")).when(pl.col("__copy") > 0).then(
            pl.lit("duplicate_exact"))
        kept = ""
    else:
        chosen = values.first() if policy == "keep_first" else values.last()
        judged = judged.with_columns(
            pl.int_range(pl.len()).over(*group).alias("__position"),
            values.eq_missing(chosen.over(*group)).alias("__chosen_version"),
        )
        is_kept = pl.col("__position") == (0 if policy == "keep_first" else pl.col("__rows") - 1)
        reason = (pl.when(is_kept).then(pl.lit(None, dtype=pl.String))
                  .when(conflict & ~pl.col("__chosen_version")).then(pl.lit("duplicate_not_kept"))
                  .otherwise(pl.lit("duplicate_exact")))
        kept = f"; kept the {policy.removeprefix('keep_')} version (validation.duplicates: {policy})"
    judged = judged.with_columns(reason.alias("reason"))
    detail = pl.format("{} rows share device_id={} ts={}", pl.col("__rows"), pl.col("device_id"), pl.col("ts"))
    detail = pl.when(pl.col("reason") == "duplicate_not_kept").then(pl.concat_str(detail, pl.lit(kept))).otherwise(
        detail)
    judged = judged.with_columns(pl.when(pl.col("reason").is_not_null()).then(detail).alias("detail"))
    return judged.select(rows.columns)


def split_telemetry(
    raw: pl.DataFrame, sensors: Mapping[str, SensorSpec], states: Sequence[str], duplicates: str = "quarantine_both"
) -> ValidationResult:
    """Judge every row of `raw`; return good rows (sorted by device, ts) and the quarantine. `duplicates` is the
    policy for conflicting versions of one timestamp (DUPLICATE_POLICIES), read in the order of `raw`'s rows."""
    names = list(sensors)
    raw = _with_labels(raw)
    problems = structure_errors(raw, sensors)
    if problems:
        quarantine = _coerced(raw, names).with_columns(
            _raw_json(raw.columns, raw.columns), pl.lit("structure").alias("reason"), pl.lit("; ".join(problems)).alias("detail")
        )
        return ValidationResult(pl.DataFrame(schema=canonical_schema(names)), quarantine, problems)

    text_sensors = [s for s in names if raw.schema[s] == pl.String]
    typed = _cast_sensors(raw.with_columns(pl.col(s).alias(f"__orig_{s}") for s in text_sensors), sensors)
    reason, detail = _reason_expr(sensors, states, text_sensors)
    typed = typed.with_columns(reason)
    # Details and the raw row are built for rejected rows only: cheap when almost every row is good.
    as_arrived = raw.rename({s: f"__orig_{s}" for s in text_sensors}).columns
    rejected = (
        typed.filter(pl.col("reason").is_not_null())
        .with_columns(detail, _raw_json(as_arrived, list(raw.columns)))
        .select(*canonical_schema(names), "reason", "detail", "raw_row")
    )
    good = typed.filter(pl.col("reason").is_null()).select(*canonical_schema(names)).with_columns(
        pl.lit(None, dtype=pl.String).alias(c) for c in ("reason", "detail", "raw_row")
    )
    shared_ts = good.select(pl.len().over("device_id", "ts") > 1).to_series()  # one hash pass, used twice
    value_cols = [c for c in canonical_schema(names) if c not in ("device_id", "ts")]
    dups = _judge_duplicates(good.filter(shared_ts), value_cols, duplicates)
    validated = pl.concat([good.filter(~shared_ts), dups.filter(pl.col("reason").is_null())])
    validated = sorted_by(validated.drop("reason", "detail", "raw_row"), ["device_id", "ts"])
    quarantine = pl.concat([rejected, dups.filter(pl.col("reason").is_not_null())])
    return ValidationResult(validated, quarantine.sort("device_id", "ts", nulls_last=True))


def contract_failures(validated: pl.DataFrame, sensors: Mapping[str, SensorSpec], states: Sequence[str]) -> pl.DataFrame:
    """Run the pandera contract on validated rows; the failure cases (empty when the contract holds)."""
    try:
        telemetry_contract(sensors, states).validate(validated, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return exc.failure_cases
    return pl.DataFrame()
