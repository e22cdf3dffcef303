"""Which day × device partitions of a validation go on to features, and why the others do not.

A partition whose data fails validation (no rows, or a rejected share above validation.max_quarantine_share) is
*excluded*: its validated and quarantined rows are kept for inspection, but features, and so scores, explanations
and alerts, have nothing for it. The other partitions of the same run go on. Each validation replaces the status
of its partitions, so a partition excluded once is included again when a rerun finds its data sound.
"""

from __future__ import annotations

import polars as pl

from itap_assets.core.validation import counts_as_rejected

PARTITION = ["day", "device_id"]
INCLUDED, EXCLUDED = "included", "excluded"
STATUS_SCHEMA = {
    "day": pl.Date, "device_id": pl.String, "status": pl.String, "reason": pl.String, "raw_rows": pl.Int64,
    "validated_rows": pl.Int64, "quarantined_rows": pl.Int64, "rejected_rows": pl.Int64, "rejected_share": pl.Float64,
    "max_quarantine_share": pl.Float64,
}


def partition_counts(raw: pl.DataFrame, validated: pl.DataFrame, quarantine: pl.DataFrame) -> pl.DataFrame:
    """Per partition: rows in, validated, quarantined, rejected (what counts against the limit), the rejected
    share, the rows not accounted for (always 0 unless validation lost a row) and the quarantine reasons."""
    def counts(frame: pl.DataFrame, name: str, extra: list[pl.Expr] = ()) -> pl.DataFrame:
        return frame.group_by(PARTITION).agg(pl.len().alias(name), *extra)

    rejected = counts_as_rejected().sum().alias("rejected_rows")
    reasons = quarantine.group_by(*PARTITION, "reason").len().sort("reason").group_by(PARTITION).agg(
        pl.format("{} {}", "reason", "len").str.join(", ").alias("reasons"))
    table = (
        counts(raw, "raw_rows")
        .join(counts(validated, "validated_rows"), on=PARTITION, how="full", coalesce=True)
        .join(counts(quarantine, "quarantined_rows", [rejected]), on=PARTITION, how="full", coalesce=True)
        .with_columns(pl.col("raw_rows", "validated_rows", "quarantined_rows", "rejected_rows").fill_null(0)
                      .cast(pl.Int64))
        .with_columns(
            (pl.col("rejected_rows") / pl.col("raw_rows")).fill_nan(0.0).alias("rejected_share"),
            (pl.col("raw_rows") - pl.col("validated_rows") - pl.col("quarantined_rows")).alias("unaccounted"),
        )
        .join(reasons, on=PARTITION, how="left")
    )
    return table.sort(PARTITION)


def partition_status(counts: pl.DataFrame, requested: pl.DataFrame, max_share: float,
                     structure_errors: list[str]) -> pl.DataFrame:
    """One row per requested (day, device_id): `included`, or `excluded` with the reason in words and numbers.
    `counts` is `partition_counts`; a requested partition without rows is excluded as empty."""
    table = requested.select(pl.col("day").cast(pl.Date), pl.col("device_id").cast(pl.String)).join(
        counts, on=PARTITION, how="left").with_columns(
        pl.col("raw_rows", "validated_rows", "quarantined_rows", "rejected_rows").fill_null(0),
        pl.col("rejected_share").fill_null(0.0))
    share = pl.col("rejected_share")
    over = pl.format(f"{{}} of {{}} rows rejected ({{}}%) > validation.max_quarantine_share {max_share:.1%}: {{}}",
                     "rejected_rows", "raw_rows", (share * 100).round(1), pl.col("reasons").fill_null(""))
    reason = (
        pl.when(pl.lit(bool(structure_errors))).then(
            pl.concat_str(pl.lit(f"structure: {'; '.join(structure_errors)} (all "), pl.col("raw_rows").cast(pl.String),
                          pl.lit(" rows quarantined)")))
        .when(pl.col("raw_rows") == 0).then(pl.lit("no rows"))
        .when(share > max_share).then(over)
    )
    return table.with_columns(
        reason.alias("reason"),
        pl.when(reason.is_null()).then(pl.lit(INCLUDED)).otherwise(pl.lit(EXCLUDED)).alias("status"),
        pl.lit(max_share).alias("max_quarantine_share"),
    ).select(list(STATUS_SCHEMA)).cast(STATUS_SCHEMA).sort(PARTITION)


def excluded(status: pl.DataFrame) -> pl.DataFrame:
    return status.filter(pl.col("status") == EXCLUDED)


def summary(status: pl.DataFrame, limit: int = 5) -> str:
    """`2 of 84 partitions excluded from downstream steps: 2026-03-05|S1 (12 of 180 rows rejected …); …`."""
    out = excluded(status)
    shown = "; ".join(f"{r['day']}|{r['device_id']} ({r['reason']})" for r in out.head(limit).iter_rows(named=True))
    more = f"; and {out.height - limit} more" if out.height > limit else ""
    return f"{out.height} of {status.height} partition(s) excluded from downstream steps: {shown}{more}"
