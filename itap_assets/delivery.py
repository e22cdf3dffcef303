"""Delivery through the outbox: record each state change before sending it, mark it sent after.

`record_notices` diffs `itap.v_alerts` against the outbox and appends the new notices (pending, or
skipped_backfill for history); `send_pending` posts every pending or failed notice, oldest first, and records each
attempt. A crash between the POST and the `sent` mark makes the next run send that notice again (at least once,
with the same notification_id / dedup_key, which receivers drop); no state change is ever lost or re-derived.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import requests
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from itap_assets import storage
from itap_assets.core.notifications import plan_notices, wire_body
from itap_assets.core.receivers import Receiver

SCHEMA = "main"
MAX_BACKOFF_S = 60.0


def utc_now() -> datetime:
    """Naive UTC, as the tables store time."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _feed(con) -> list[dict]:
    if not storage.table_exists(con, SCHEMA, "v_alerts"):
        return []
    return storage.frame_of(con.sql("SELECT * FROM v_alerts")).to_dicts()


def _last_notices(con) -> dict[tuple[str, str], dict]:
    rows = storage.frame_of(con.sql(
        "SELECT alert_id, receiver, event, revision, severity, cause, route, payload FROM notification_outbox "
        "QUALIFY row_number() OVER (PARTITION BY alert_id, receiver ORDER BY seq DESC) = 1"
    )).to_dicts()
    return {(r["alert_id"], r["receiver"]): r for r in rows}


def record_notices(path: Path | str, receivers: Sequence[Receiver], *, backfill: bool, run_id: str | None = None,
                   now: datetime | None = None) -> pl.DataFrame:
    """Append the notices the feed calls for and return them."""
    now = now or utc_now()
    with storage.open_ledgers(path, SCHEMA) as con:
        notices = plan_notices(_feed(con), _last_notices(con), tuple(receivers), now, backfill)
        if not notices:
            return pl.DataFrame()
        first = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM notification_outbox").fetchall()[0][0]
        rows = pl.DataFrame([asdict(n) for n in notices]).with_columns(
            pl.int_range(first, first + len(notices), dtype=pl.Int64).alias("seq"),
            pl.lit(now).alias("created_at"), pl.lit(run_id, dtype=pl.String).alias("run_id"),
        )
        storage.append_rows(con, SCHEMA, "notification_outbox", rows)  # one INSERT: all or none
    return rows


class Retryable(Exception):
    """429, 5xx or no answer: worth another attempt."""


@dataclass
class Outcome:
    http_status: int | None
    error: str | None


def _post(url: str, body: str, nid: str, timeout_s: float) -> Outcome:
    try:
        response = requests.post(url, data=body, timeout=timeout_s,
                                 headers={"Content-Type": "application/json", "Idempotency-Key": nid})
    except requests.RequestException as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])
    error = None if response.ok else response.text[:500] or response.reason
    return Outcome(response.status_code, error)


def _record_attempt(path: Path | str, nid: str, receiver: str, outcome: Outcome) -> None:
    """Its own short transaction: the file stays free for the pipeline while a receiver is slow."""
    with storage.connect(path) as con:
        attempt = con.execute(
            "SELECT coalesce(max(attempt), 0) + 1 FROM notification_attempts WHERE notification_id = ? AND "
            "receiver = ?", [nid, receiver]).fetchall()[0][0]
        storage.append_rows(con, SCHEMA, "notification_attempts", pl.DataFrame({
            "notification_id": [nid], "receiver": [receiver], "attempt": [attempt], "attempted_at": [utc_now()],
            "http_status": pl.Series([outcome.http_status], dtype=pl.Int32), "error": [outcome.error]}))


def deliver(path: Path | str, receiver: Receiver, nid: str, body: str) -> Outcome:
    """POST with exponential backoff on 429, 5xx and connection errors (up to max_attempts); other 4xx fail at
    once. Every attempt is recorded."""
    def attempt() -> Outcome:
        outcome = _post(str(receiver.url), body, nid, receiver.timeout_s)
        _record_attempt(path, nid, receiver.name, outcome)
        if outcome.http_status is None or outcome.http_status == 429 or outcome.http_status >= 500:
            raise Retryable(outcome)
        return outcome

    retrying = Retrying(stop=stop_after_attempt(receiver.max_attempts),
                        wait=wait_exponential(multiplier=receiver.backoff_s, max=MAX_BACKOFF_S),
                        retry=retry_if_exception_type(Retryable))
    try:
        return retrying(attempt)
    except RetryError as exc:
        return exc.last_attempt.exception().args[0]


def send_pending(path: Path | str, receivers: Sequence[Receiver]) -> dict[str, int]:
    """Send every pending or failed notice of a configured receiver, in creation order. A failure stops that
    receiver's notices of the same incident for this run, so a receiver never hears `resolved` before `firing`."""
    by_name = {r.name: r for r in receivers}
    with storage.open_ledgers(path, SCHEMA) as con:
        todo = storage.frame_of(con.sql(
            "SELECT notification_id, receiver, alert_id, payload FROM notification_outbox "
            "WHERE status IN ('pending', 'failed') ORDER BY seq")).to_dicts()
    counts = {"sent": 0, "failed": 0, "held": 0}
    blocked: set[tuple[str, str]] = set()
    for row in todo:
        receiver = by_name.get(row["receiver"])
        stream = (row["receiver"], row["alert_id"])
        if receiver is None or stream in blocked:
            counts["held"] += 1
            continue
        outcome = deliver(path, receiver, row["notification_id"], wire_body(receiver, row["payload"]))
        sent = outcome.http_status is not None and 200 <= outcome.http_status < 300
        with storage.connect(path) as con:
            storage.update_row(con, SCHEMA, "notification_outbox",
                               {"notification_id": row["notification_id"], "receiver": row["receiver"]},
                               {"status": "sent" if sent else "failed", "sent_at": utc_now() if sent else None})
        counts["sent" if sent else "failed"] += 1
        if not sent:
            blocked.add(stream)
    return counts
