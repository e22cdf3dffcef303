"""Operator views over the ITAP tables, (re)created by the pipeline as soon as the tables they read exist, and in
the Parquet mode the views that make the files tables.

Each operator view is a function of the tables' columns (sensor sets differ per deployment) returning its SELECT.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from itap_assets.core.validation import HARMLESS_REASONS

Columns = Mapping[str, list[str]]  # table -> its columns

NON_SENSOR = {"ts", "day", "device_id", "state", "fault_tag", "fault_id"}


def data_quality(cols: Columns) -> str:
    """Per partition: rows in, validated, quarantined (harmless duplicate copies apart), missing rate per sensor,
    and whether validation let the partition go on to features (`status`; `excluded_reason` says why not)."""
    sensors = [c for c in cols["validated"] if c not in NON_SENSOR]
    missing = ",\n  ".join(f'avg(("{s}" IS NULL)::INT) AS "missing_{s}"' for s in sensors) or "NULL AS missing"
    harmless = ", ".join(f"'{r}'" for r in HARMLESS_REASONS)
    return f"""
WITH v AS (
  SELECT day, device_id, count(*) AS validated_rows,
  {missing}
  FROM validated GROUP BY ALL
), q AS (
  SELECT day, device_id,
         count(*) FILTER (WHERE reason NOT IN ({harmless})) AS quarantined_rows,
         count(*) FILTER (WHERE reason IN ({harmless})) AS duplicate_rows,
         string_agg(DISTINCT reason, ', ' ORDER BY reason) AS reasons
  FROM quarantine GROUP BY ALL
), s AS (
  SELECT day, device_id, status, reason AS excluded_reason FROM partition_status
)
SELECT day, device_id,
       coalesce(s.status, 'included') AS status,
       s.excluded_reason,
       coalesce(v.validated_rows, 0) + coalesce(q.quarantined_rows, 0) + coalesce(q.duplicate_rows, 0) AS rows_in,
       coalesce(v.validated_rows, 0) AS validated_rows,
       coalesce(q.quarantined_rows, 0) AS quarantined_rows,
       coalesce(q.duplicate_rows, 0) AS duplicate_rows,
       q.reasons,
       v.* EXCLUDE (day, device_id, validated_rows)
FROM v FULL OUTER JOIN q USING (day, device_id) FULL OUTER JOIN s USING (day, device_id)
ORDER BY day, device_id"""


def alerts_view(cols: Columns) -> str:
    """The alert feed: one row per incident (an incident spanning midnight is stored on both days; its latest
    state wins), newest first, with its operator state: the latest ack or unack (acked_* are NULL after an unack)
    and the latest silence from `alert_acks`, which recomputing alerts never touches."""
    return """
WITH latest AS (
  SELECT * EXCLUDE (_latest) FROM (
    SELECT *, row_number() OVER (PARTITION BY alert_id ORDER BY end_ts DESC, day DESC) AS _latest FROM alerts
  ) WHERE _latest = 1
), ack AS (
  SELECT alert_id, action, actor, acted_at, note FROM alert_acks WHERE action IN ('ack', 'unack')
  QUALIFY row_number() OVER (PARTITION BY alert_id ORDER BY acted_at DESC) = 1
), silence AS (
  SELECT alert_id, actor, silenced_until, note FROM alert_acks WHERE action = 'silence'
  QUALIFY row_number() OVER (PARTITION BY alert_id ORDER BY acted_at DESC) = 1
)
SELECT latest.*,
       CASE WHEN ack.action = 'ack' THEN ack.actor END AS acked_by,
       CASE WHEN ack.action = 'ack' THEN ack.acted_at END AS acked_at,
       CASE WHEN ack.action = 'ack' THEN ack.note END AS ack_note,
       silence.silenced_until, silence.actor AS silenced_by, silence.note AS silence_note
FROM latest LEFT JOIN ack USING (alert_id) LEFT JOIN silence USING (alert_id)
ORDER BY start_ts DESC, device_id"""


def device_health(cols: Columns) -> str:
    """Each device's latest day: health, its change, what dominates, and its active alerts that day."""
    return """
WITH latest AS (
  SELECT * FROM device_summaries QUALIFY row_number() OVER (PARTITION BY device_id ORDER BY day DESC) = 1
), active AS (
  SELECT device_id, day, count(*) AS active_alerts,
         count(*) FILTER (WHERE severity = 'CRITICAL') AS critical_alerts
  FROM alerts WHERE suppressed_by IS NULL GROUP BY ALL
)
SELECT rank() OVER (ORDER BY l.health, l.device_id) AS rank, l.device_id, l.day, l.health, l.health_change,
       l.flagged, l.flagged_share, l.max_score, l.dominant_family, l.top_features,
       coalesce(a.active_alerts, 0) AS active_alerts, coalesce(a.critical_alerts, 0) AS critical_alerts
FROM latest l LEFT JOIN active a USING (device_id, day)
ORDER BY rank"""


# view name -> (tables it reads, SQL builder)
VIEWS: dict[str, tuple[tuple[str, ...], Callable[[Columns], str]]] = {
    "v_data_quality": (("validated", "quarantine", "partition_status"), data_quality),
    "v_alerts": (("alerts", "alert_acks"), alerts_view),
    "v_device_health": (("device_summaries", "alerts"), device_health),
}


# The Parquet mode: each table is a view over its files, so SQL reads both modes alike.
HIVE_TYPES = {"day": "DATE", "device_id": "VARCHAR"}  # never inferred: a device "0001" must stay text


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def tree_table_view(glob: str, hive_keys: Sequence[str]) -> str:
    """A table of the Parquet tree: every partition file, read by column name (a column added later is NULL in the
    older files); the partition directories are columns too, so a filter on day or device opens only its files."""
    types = ", ".join(f"'{k}': {HIVE_TYPES[k]}" for k in hive_keys)
    hive = f", hive_types = {{{types}}}" if hive_keys else ""
    return f"SELECT * FROM read_parquet({_literal(glob)}, hive_partitioning = true, union_by_name = true{hive})"


def ledger_view(glob: str, key: Sequence[str]) -> str:
    """A ledger of the Parquet tree: one file per append; with a primary key, the latest version of each row (file
    names sort by time of writing)."""
    if not key:
        return f"SELECT * FROM read_parquet({_literal(glob)}, union_by_name = true)"
    return (f"SELECT * EXCLUDE (filename) FROM read_parquet({_literal(glob)}, union_by_name = true, filename = true) "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(key)} ORDER BY filename DESC) = 1")
