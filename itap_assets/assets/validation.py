"""validated + quarantine: the only door into the rest of the pipeline, with its checks shown in the UI."""

import dagster as dg
import polars as pl

from itap_assets.assets.metadata import markdown_table
from itap_assets.core.validation import REASONS, contract_failures, counts_as_rejected, split_telemetry
from itap_assets.partitions import day_device_partitions, valid_keys
from itap_assets.resources import DUCKDB_POOL, ItapConfig

PARTITION = ["day", "device_id"]


def _check(name: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    """A check evaluated inside the validation step (it loads nothing). Dagster 1.13 records one result per run
    without a partition, so a partitioned spec would show every partition of a range run as "Skipped"; the result
    metadata names the partitions instead."""
    return dg.AssetCheckSpec(name, asset="validated", description=description, blocking=blocking)


CHECKS = [
    _check(
        "structure_and_quarantine_share",
        "Blocking: required columns with the right types, at least one row, and a quarantined share at or below "
        "validation.max_quarantine_share in every partition (exact copies do not count, the conflicting versions "
        "of one timestamp count once). When it fails, validated/quarantine are still written "
        "(inspect them) but downstream steps of this run do not run.",
        blocking=True,
    ),
    _check("rows_accounted_for", "Rows in raw_telemetry = rows in validated + rows in quarantine, per partition.",
           blocking=True),
    _check("telemetry_contract", "The pandera contract holds on every validated row.", blocking=True),
    _check("missing_rate", "WARN when a sensor's missing rate exceeds validation.max_missing_rate."),
    _check("range_violations", "WARN when rows were quarantined for NaN/inf or out-of-range values."),
]


def _per_partition(raw: pl.DataFrame, validated: pl.DataFrame, quarantine: pl.DataFrame) -> pl.DataFrame:
    def counts(frame: pl.DataFrame, name: str, extra: list[pl.Expr] = ()) -> pl.DataFrame:
        return frame.group_by(PARTITION).agg(pl.len().alias(name), *extra)

    rejected = counts_as_rejected().sum().alias("rejected_rows")
    table = (
        counts(raw, "raw_rows")
        .join(counts(validated, "validated_rows"), on=PARTITION, how="full", coalesce=True)
        .join(counts(quarantine, "quarantined_rows", [rejected]), on=PARTITION, how="full", coalesce=True)
        .fill_null(0)
        .with_columns(
            (pl.col("rejected_rows") / pl.col("raw_rows")).fill_nan(0.0).alias("rejected_share"),
            (pl.col("raw_rows") - pl.col("validated_rows") - pl.col("quarantined_rows")).alias("unaccounted"),
        )
    )
    return table.sort(PARTITION)


@dg.multi_asset(
    outs={
        "validated": dg.AssetOut(
            description="Telemetry that passed the contract: sorted by ts, exact duplicates collapsed, NULL = missing.",
            kinds={"polars", "duckdb"},
        ),
        "quarantine": dg.AssetOut(
            description="Every rejected row with `reason` (code), `detail` and `raw_row` (the row as it arrived).",
            kinds={"polars", "duckdb"},
        ),
    },
    partitions_def=day_device_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=DUCKDB_POOL,
    group_name="ingest",
    check_specs=CHECKS,
    can_subset=False,
)
def validation(context: dg.AssetExecutionContext, raw_telemetry: pl.DataFrame, itap_config: ItapConfig):
    """Judge every raw row; nothing is dropped."""
    settings = itap_config.settings
    sensors, rules = settings.sensors, settings.validation
    result = split_telemetry(raw_telemetry, sensors, rules.states)
    validated, quarantine = result.validated, result.quarantine
    per_partition = _per_partition(raw_telemetry, validated, quarantine)
    # Partitions of this run that have no raw rows at all are empty partitions (a key whose device is not a valid
    # id is left out of every step, not reported empty).
    requested = {tuple(k.split("|")) for k in valid_keys(day_device_partitions, context.partition_keys)}
    present = {(str(d), dev) for d, dev in per_partition.select(PARTITION).iter_rows()}
    empty = sorted("|".join(k) for k in requested - present)

    missing = validated.select(pl.col(s).is_null().mean().alias(s) for s in sensors).row(0, named=True) if \
        validated.height else {s: 0.0 for s in sensors}
    reason_counts = result.reason_counts
    yield dg.Output(
        validated,
        "validated",
        metadata={
            "rows": validated.height,
            "missing_rate": dg.MetadataValue.json({k: round(v or 0.0, 5) for k, v in missing.items()}),
            "partitions": per_partition.height,
        },
    )
    yield dg.Output(
        quarantine,
        "quarantine",
        metadata={
            "rows": quarantine.height,
            "by_reason": dg.MetadataValue.json(reason_counts),
            "examples": dg.MetadataValue.md(markdown_table(quarantine.select("device_id", "ts", "reason", "detail"))),
        },
    )

    over_limit = per_partition.filter(pl.col("rejected_share") > rules.max_quarantine_share)
    problems = [*result.structure_errors]
    if empty:
        problems.append(f"{len(empty)} partition(s) have no rows: {', '.join(empty[:5])}")
    if over_limit.height:
        problems.append(
            f"{over_limit.height} partition(s) quarantined more than {rules.max_quarantine_share:.1%} of rows"
        )
    yield dg.AssetCheckResult(
        check_name="structure_and_quarantine_share",
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or "structure sound, quarantine within limit",
        metadata={
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "_none_"),
            "partitions_over_limit": dg.MetadataValue.md(markdown_table(over_limit)),
            "max_quarantine_share": rules.max_quarantine_share,
            "quarantined_by_reason": dg.MetadataValue.json(reason_counts),
            "reason_codes": dg.MetadataValue.json({k: REASONS[k] for k in reason_counts}),
            "example_failures": dg.MetadataValue.md(
                markdown_table(quarantine.filter(pl.col("reason") != "duplicate_exact")
                          .select("device_id", "ts", "reason", "detail"))
            ),
        },
    )

    unaccounted = per_partition.filter(pl.col("unaccounted") != 0)
    yield dg.AssetCheckResult(
        check_name="rows_accounted_for",
        passed=unaccounted.height == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "raw_rows": raw_telemetry.height,
            "validated_rows": validated.height,
            "quarantined_rows": quarantine.height,
            "partitions_unaccounted": dg.MetadataValue.md(markdown_table(unaccounted)),
        },
    )

    failures = contract_failures(validated, sensors, rules.states)
    yield dg.AssetCheckResult(
        check_name="telemetry_contract",
        passed=failures.height == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"failure_cases": dg.MetadataValue.md(markdown_table(failures))},
    )

    high_missing = {s: round(v or 0.0, 5) for s, v in missing.items() if (v or 0.0) > rules.max_missing_rate}
    yield dg.AssetCheckResult(
        check_name="missing_rate",
        passed=not high_missing,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "missing_rate": dg.MetadataValue.json({k: round(v or 0.0, 5) for k, v in missing.items()}),
            "above_limit": dg.MetadataValue.json(high_missing),
            "max_missing_rate": rules.max_missing_rate,
        },
    )

    violations = quarantine.filter(pl.col("reason").is_in(["non_finite", "out_of_range"]))
    yield dg.AssetCheckResult(
        check_name="range_violations",
        passed=violations.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rows": violations.height,
            "examples": dg.MetadataValue.md(markdown_table(violations.select("device_id", "ts", "reason", "detail"))),
        },
    )
