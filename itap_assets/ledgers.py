"""Tables the pipeline never rewrites: operator actions on incidents and the notification outbox.

Recomputing `alerts` replaces its partitions; what an operator did and what was sent must survive that, so these
tables are only appended to (the outbox's `status`/`sent_at` are the one update: a delivery's outcome).
Created, when missing, before any view that reads them (storage.ensure_views). In the Parquet mode each append is
a new file under `<root>/_ledgers/<table>/`, and an outcome a new version of the row: the view keeps the latest
version per primary key (views.ledger_view), so an append never rewrites, nor waits for, anything.
"""

import re

LEDGERS: dict[str, str] = {
    # One row per operator action; the latest per alert_id and kind is the incident's operator state (v_alerts).
    "alert_acks": """
        alert_id VARCHAR NOT NULL,
        action VARCHAR NOT NULL CHECK (action IN ('ack', 'unack', 'silence')),
        actor VARCHAR NOT NULL,
        note VARCHAR,
        acted_at TIMESTAMP NOT NULL,
        silenced_until TIMESTAMP""",
    # One row per (state change, receiver), written before the send; `seq` is the order of creation.
    "notification_outbox": """
        notification_id VARCHAR NOT NULL,
        receiver VARCHAR NOT NULL,
        seq BIGINT NOT NULL,
        alert_id VARCHAR NOT NULL,
        event VARCHAR NOT NULL CHECK (event IN ('firing', 'revised', 'resolved')),
        revision INTEGER NOT NULL,
        severity VARCHAR,
        cause VARCHAR,
        route VARCHAR,
        payload VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        run_id VARCHAR,
        status VARCHAR NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'skipped_backfill')),
        sent_at TIMESTAMP,
        PRIMARY KEY (notification_id, receiver)""",
    # Every HTTP attempt of a notification: status code, or the connection error.
    "notification_attempts": """
        notification_id VARCHAR NOT NULL,
        receiver VARCHAR NOT NULL,
        attempt INTEGER NOT NULL,
        attempted_at TIMESTAMP NOT NULL,
        http_status INTEGER,
        error VARCHAR,
        PRIMARY KEY (notification_id, receiver, attempt)""",
}


def ledger_key(table: str) -> tuple[str, ...]:
    """The primary key columns of a ledger, as its DDL declares them (none for alert_acks)."""
    match = re.search(r"PRIMARY KEY \(([^)]*)\)", LEDGERS[table])
    return tuple(c.strip() for c in match.group(1).split(",")) if match else ()
