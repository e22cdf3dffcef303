"""What operators do with the alert feed: acknowledge, unacknowledge, silence, export.

Each action is a row appended to `alert_acks` (recomputing `alerts` never touches it); `itap.v_alerts` shows the
latest state. The `itap` command (itap_assets.cli) calls these functions; they take the database file as the rest
of ITAP does (`ITAP_DB_PATH`, default data/itap.duckdb).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from itap_assets import storage
from itap_assets.core.alert_export import predecessor_alert
from itap_assets.delivery import SCHEMA, utc_now
from itap_assets.settings import db_path


class UnknownAlert(LookupError):
    """No incident with that alert_id in the alerts table."""


def as_utc(value: datetime | str) -> datetime:
    """An ISO time (or datetime) as naive UTC; a time without offset is UTC."""
    ts = datetime.fromisoformat(value) if isinstance(value, str) else value
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo is not None else ts


def _database(db: Path | str | None) -> Path:
    path = Path(db) if db is not None else db_path()
    if not path.exists():
        raise UnknownAlert(f"no ITAP database at {path} (run `make demo`, or set ITAP_DB_PATH / --db)")
    return path


def _act(alert_id: str, action: str, by: str, note: str | None, until: datetime | None,
         db: Path | str | None) -> None:
    if not by.strip():
        raise ValueError("--by must name the operator")
    with storage.open_ledgers(_database(db), SCHEMA) as con:
        known = storage.table_exists(con, SCHEMA, "alerts") and con.execute(
            "SELECT count(*) FROM alerts WHERE alert_id = ?", [alert_id]).fetchall()[0][0]
        if not known:
            raise UnknownAlert(f"unknown alert id {alert_id!r} (see itap.v_alerts for the ids)")
        storage.append_rows(con, SCHEMA, "alert_acks", pl.DataFrame({
            "alert_id": [alert_id], "action": [action], "actor": [by.strip()], "note": [note],
            "acted_at": [utc_now()], "silenced_until": pl.Series([until], dtype=pl.Datetime("us"))}))


def acknowledge(alert_id: str, by: str, note: str | None = None, *, db: Path | str | None = None) -> None:
    """Someone owns the incident; notifications continue (a revision or resolve still reaches the receivers)."""
    _act(alert_id, "ack", by, note, None, db)


def unacknowledge(alert_id: str, by: str, note: str | None = None, *, db: Path | str | None = None) -> None:
    _act(alert_id, "unack", by, note, None, db)


def silence(alert_id: str, by: str, until: datetime | str, note: str | None = None, *,
            db: Path | str | None = None) -> None:
    """No page (firing or revised) for the incident until `until`; a resolve is still sent."""
    _act(alert_id, "silence", by, note, as_utc(until), db)


def export_alerts(since: datetime | str | None = None, until: datetime | str | None = None, *,
                  db: Path | str | None = None) -> list[dict]:
    """Active incidents (not suppressed) that started in [since, until), oldest first, in the predecessor's
    alerts.json shape."""
    where, params = ["suppressed_by IS NULL"], []
    for bound, op in ((since, ">="), (until, "<")):
        if bound is not None:
            where.append(f"start_ts {op} ?")
            params.append(as_utc(bound))
    with storage.open_ledgers(_database(db), SCHEMA) as con:
        if not storage.table_exists(con, SCHEMA, "v_alerts"):
            return []
        rows = storage.frame_of(con.sql(
            f"SELECT * FROM v_alerts WHERE {' AND '.join(where)} ORDER BY start_ts, device_id", params=params))
    return [predecessor_alert(r) for r in rows.to_dicts()]
