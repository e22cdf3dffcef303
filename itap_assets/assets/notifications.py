"""alert_notifications: every incident state change, delivered once to the receivers of `alert_rules.yaml`."""

import dagster as dg

from itap_assets.assets.metadata import markdown_table
from itap_assets.delivery import record_notices, send_pending
from itap_assets.resources import AlertRules, Warehouse, delivery_pool

BACKFILL_TAG = "dagster/backfill"


class NotificationConfig(dg.Config):
    """`backfill: true` records this run's state changes as history (skipped_backfill) instead of paging."""

    backfill: bool = False


# Two deliveries never overlap (in the DuckDB mode, nor a delivery and a write of alerts): see delivery_pool.
@dg.asset(deps=["alerts"], group_name="report", kinds={"duckdb"}, pool=delivery_pool())
def alert_notifications(context: dg.AssetExecutionContext, config: NotificationConfig, warehouse: Warehouse,
                        alert_rules: AlertRules) -> dg.MaterializeResult:
    """Diff the alert feed against the outbox, append the new notices, then send what is pending or failed.
    A run of a backfill (Dagster's backfill tag) or with `backfill: true` does not page."""
    receivers = alert_rules.rules.receivers
    backfill = config.backfill or BACKFILL_TAG in context.run.tags
    new = record_notices(warehouse.database, receivers, backfill=backfill, run_id=context.run.run_id)
    counts = send_pending(warehouse.database, receivers)
    if not receivers:
        context.log.info("no receivers in the alert rules file: nothing to deliver")
    return dg.MaterializeResult(metadata={
        "receivers": len(receivers),
        "backfill": backfill,
        "new_notices": new.height,
        **counts,
        "notices": dg.MetadataValue.md(markdown_table(
            new.select("receiver", "event", "revision", "alert_id", "severity", "route", "status"), limit=20)
            if new.height else "_no new state change_"),
    })
