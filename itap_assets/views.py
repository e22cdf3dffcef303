"""Operator views over the ITAP tables, (re)created by the pipeline as soon as the tables they read exist.

Each view is a function of the tables' columns (sensor sets differ per deployment) returning its SELECT.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

Columns = Mapping[str, list[str]]  # table -> its columns

NON_SENSOR = {"ts", "day", "device_id", "state", "fault_tag", "fault_id"}


def data_quality(cols: Columns) -> str:
    sensors = [c for c in cols["validated"] if c not in NON_SENSOR]
    missing = ",\n  ".join(f'avg(("{s}" IS NULL)::INT) AS "missing_{s}"' for s in sensors) or "NULL AS missing"
    return f"""
WITH v AS (
  SELECT day, device_id, count(*) AS validated_rows,
  {missing}
  FROM validated GROUP BY ALL
), q AS (
  SELECT day, device_id,
         count(*) FILTER (WHERE reason <> 'duplicate_exact') AS quarantined_rows,
         count(*) FILTER (WHERE reason = 'duplicate_exact') AS duplicate_rows,
         string_agg(DISTINCT reason, ', ' ORDER BY reason) AS reasons
  FROM quarantine GROUP BY ALL
)
SELECT day, device_id,
       coalesce(v.validated_rows, 0) + coalesce(q.quarantined_rows, 0) + coalesce(q.duplicate_rows, 0) AS rows_in,
       coalesce(v.validated_rows, 0) AS validated_rows,
       coalesce(q.quarantined_rows, 0) AS quarantined_rows,
       coalesce(q.duplicate_rows, 0) AS duplicate_rows,
       q.reasons,
       v.* EXCLUDE (day, device_id, validated_rows)
FROM v FULL OUTER JOIN q USING (day, device_id)
ORDER BY day, device_id"""


# view name -> (tables it reads, SQL builder)
VIEWS: dict[str, tuple[tuple[str, ...], Callable[[Columns], str]]] = {
    "v_data_quality": (("validated", "quarantine"), data_quality),
}
