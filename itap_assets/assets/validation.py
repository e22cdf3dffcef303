"""validated + quarantine: the only door into the rest of the pipeline, with its checks shown in the UI."""

import dagster as dg
import polars as pl

from itap_assets import storage
from itap_assets.assets.common import run_keys
from itap_assets.assets.metadata import markdown_table
from itap_assets.core.partition_status import PARTITION, excluded, partition_counts, partition_status, summary
from itap_assets.core.validation import (DUPLICATE_POLICIES, HARMLESS_REASONS, REASONS, contract_failures,
                                         split_telemetry)
from itap_assets.partitions import day_device_partitions
from itap_assets.resources import ItapConfig, Warehouse, writer_pool
from itap_assets.run_report import EXCLUDED_KEY

PARTITION_STATUS = "partition_status"


def _check(name: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    """A check evaluated inside the validation step (it loads nothing). Dagster 1.13 records one result per run
    without a partition, so a partitioned spec would show every partition of a range run as "Skipped"; the result
    metadata names the partitions instead."""
    return dg.AssetCheckSpec(name, asset="validated", description=description, blocking=blocking)


CHECKS = [
    _check(
        "structure_and_quarantine_share",
        "Blocking for the structure: required columns with the right types (a failure stops downstream steps). "
        "Per partition: at least one row and a rejected share at or below validation.max_quarantine_share (exact "
        "copies do not count, the conflicting versions of one timestamp count once); a partition that fails is "
        "excluded (itap.partition_status, v_data_quality) and the check fails as a WARN naming it, so the other "
        "partitions of the run go on. validated/quarantine are written either way (inspect them).",
        blocking=True,
    ),
    _check("rows_accounted_for", "Rows in raw_telemetry = rows in validated + rows in quarantine, per partition.",
           blocking=True),
    _check("telemetry_contract", "The pandera contract holds on every validated row.", blocking=True),
    _check("missing_rate", "WARN when a sensor's missing rate exceeds validation.max_missing_rate."),
    _check("range_violations", "WARN when rows were quarantined for NaN/inf or out-of-range values."),
]


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
    pool=writer_pool(),
    group_name="ingest",
    check_specs=CHECKS,
    can_subset=False,
)
def validation(context: dg.AssetExecutionContext, raw_telemetry: pl.DataFrame, itap_config: ItapConfig,
               warehouse: Warehouse):
    """Judge every raw row; nothing is dropped. The status of each partition (included, or excluded and why) is
    stored in itap.partition_status, which `features` reads."""
    settings = itap_config.settings
    sensors, rules = settings.sensors, settings.validation
    result = split_telemetry(raw_telemetry, sensors, rules.states, rules.duplicates)
    validated, quarantine = result.validated, result.quarantine
    per_partition = partition_counts(raw_telemetry, validated, quarantine)
    # A key whose device is not a valid id is left out of every step (run_keys), not reported empty.
    status = partition_status(per_partition, run_keys(context), rules.max_quarantine_share, result.structure_errors)
    out = excluded(status)

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
            "partitions_excluded": out.height,
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

    # After both outputs are stored: the status describes the rows `validated` now holds.
    storage.replace_partitions(warehouse.database, warehouse.db_schema, PARTITION_STATUS, status,
                               status.select(PARTITION))
    structure = result.structure_errors
    yield dg.AssetCheckResult(
        check_name="structure_and_quarantine_share",
        passed=not structure and out.height == 0,
        # Only a structure error blocks downstream steps; excluded partitions are kept out of them by `features`.
        severity=dg.AssetCheckSeverity.ERROR if structure else dg.AssetCheckSeverity.WARN,
        description=summary(status) if out.height else "structure sound, every partition within the quarantine limit",
        metadata={
            "partitions_checked": status.height,
            EXCLUDED_KEY: out.height,
            "excluded_partitions": dg.MetadataValue.md(markdown_table(out.drop("status"), limit=50)),
            "structure_errors": dg.MetadataValue.md("\n".join(f"- {p}" for p in structure) or "_none_"),
            "max_quarantine_share": rules.max_quarantine_share,
            "duplicates_policy": f"{rules.duplicates}: {DUPLICATE_POLICIES[rules.duplicates]}",
            "quarantined_by_reason": dg.MetadataValue.json(reason_counts),
            "reason_codes": dg.MetadataValue.json({k: REASONS[k] for k in reason_counts}),
            "example_failures": dg.MetadataValue.md(
                markdown_table(quarantine.filter(~pl.col("reason").is_in(HARMLESS_REASONS))
                          .select("device_id", "ts", "reason", "detail"))
            ),
        },
    )

    unaccounted = per_partition.filter(pl.col("unaccounted") != 0)
    yield dg.AssetCheckResult(
        check_name="rows_accounted_for",
        passed=unaccounted.height == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(
            f"{r['day']}|{r['device_id']}: {r['raw_rows']} rows in, {r['validated_rows']} validated + "
            f"{r['quarantined_rows']} quarantined" for r in unaccounted.head(5).iter_rows(named=True)
        ) or "every row validated or quarantined",
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
        description=f"{failures.height} failure case(s) on validated rows" if failures.height else "contract holds",
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
