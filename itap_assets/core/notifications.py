"""Which incident state changes each receiver must hear, and the payloads it is sent.

Pure: the alert feed (one dict per alert_id, as `itap.v_alerts` shows it) is diffed against the last notice each
receiver got per alert (from the outbox), so reruns and backfills that find nothing new produce nothing new.

- a new active incident → `firing` (revision 0); one already resolved when first seen → `firing` then `resolved`
- a notified incident whose (severity, cause, route) changed → `revised` (revision + 1)
- a notified incident whose status became `resolved` → `resolved` (even when silenced: it closes a page)
- a resolved incident that fires again → `firing` (revision + 1)
- a notified, unresolved incident no longer in the feed (recomputing the alerts no longer finds it: a new model,
  or late data moved its start) → `resolved`, described as its last notice described it: no page stays open

Only active incidents (`suppressed_by` NULL, not silenced by an operator) open or revise a page.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itap_assets.core.alerting.config import SEVERITY_RANK
from itap_assets.core.receivers import PagerDutyReceiver, Receiver

TRACKED = ("severity", "cause", "route")  # a change of any of these is a revision
ALERTMANAGER_NO_END = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing
PAGERDUTY_SEVERITY = {"CRITICAL": "critical", "WARNING": "warning", "INFO": "info"}


@dataclass(frozen=True)
class Notice:
    """One state change for one receiver: an outbox row before it is sent."""

    notification_id: str
    receiver: str
    alert_id: str
    event: str
    revision: int
    severity: str | None
    cause: str | None
    route: str | None
    payload: str
    status: str  # pending | skipped_backfill


def notification_id(alert_id: str, event: str, revision: int) -> str:
    """Stable across reruns: the same state change of the same incident always has the same id."""
    return hashlib.sha1(f"{alert_id}|{event}|{revision}".encode()).hexdigest()[:20]


def is_active(alert: dict[str, Any], now: datetime) -> bool:
    silenced_until = alert.get("silenced_until")
    return alert.get("suppressed_by") is None and not (silenced_until is not None and silenced_until > now)


def opens(receiver: Receiver, alert: dict[str, Any]) -> bool:
    """Whether `receiver` is one to open this incident on: its routes and minimum severity."""
    if receiver.routes and alert.get("route") not in receiver.routes:
        return False
    return SEVERITY_RANK.get(alert.get("severity") or "", -1) >= SEVERITY_RANK[receiver.min_severity]


def changes(alert: dict[str, Any], last: dict[str, Any] | None, receiver: Receiver, now: datetime
            ) -> list[tuple[str, int]]:
    """The (event, revision) pairs `receiver` has not been told about, in order; `last` is its latest notice."""
    status = alert["status"]
    if last is None or last["event"] == "resolved":
        if (last is not None and status == "resolved") or not is_active(alert, now) or not opens(receiver, alert):
            return []
        revision = 0 if last is None else last["revision"] + 1
        return [("firing", revision)] + ([("resolved", revision)] if status == "resolved" else [])
    if status == "resolved":
        return [("resolved", last["revision"])]
    if is_active(alert, now) and any(alert.get(k) != last.get(k) for k in TRACKED):
        return [("revised", last["revision"] + 1)]
    return []


def is_history(alert: dict[str, Any], receiver: Receiver, now: datetime, backfill: bool) -> bool:
    """A change found by a backfill, or whose evidence ended before the receiver's horizon, is not a page."""
    if receiver.deliver_backfills:
        return False
    horizon = receiver.page_within_hours
    return backfill or (horizon is not None and now - alert["end_ts"] > timedelta(hours=horizon))


def _from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


def _annotation(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def withdrawn(notice: dict[str, Any]) -> dict[str, Any]:
    """The incident as the receiver's last notice of it described it (`payload` as stored in the outbox),
    resolved: what closes a page whose incident recomputing no longer finds."""
    body = json.loads(notice["payload"])
    if "alerts" in body:  # Alertmanager: identity in the labels, the rest in the annotations
        labels = body["alerts"][0]["labels"]
        info = {k: _annotation(v) for k, v in body["alerts"][0]["annotations"].items()} | {
            "alert_id": labels["alert_id"], "device_id": labels["device_id"], "rule": labels["rule"]}
    else:
        info = body["payload"]["custom_details"]
    return {
        "alert_id": info["alert_id"], "device_id": info["device_id"], "rule_name": info.get("rule"),
        "severity": notice["severity"], "cause": notice["cause"], "route": notice["route"],
        "action": info.get("action"), "confidence": info.get("confidence"), "max_score": info.get("max_score"),
        "n_events": info.get("n_events"), "families": json.dumps(info.get("families") or {}),
        "top_features": json.dumps(info.get("top_features") or []), "acked_by": info.get("acked_by"),
        "start_ts": _from_iso(info["start_ts"]), "end_ts": _from_iso(info["end_ts"]), "status": "resolved",
        "suppressed_by": None,
    }


def plan_notices(feed: list[dict[str, Any]], last: dict[tuple[str, str], dict[str, Any]],
                 receivers: tuple[Receiver, ...], now: datetime, backfill: bool) -> list[Notice]:
    """Every notice the feed calls for, receiver by receiver, oldest incident first; `last` maps
    (alert_id, receiver name) to that receiver's latest notice of the alert (with its stored `payload`)."""
    out = []
    in_feed = {a["alert_id"] for a in feed}
    for receiver in receivers:
        gone = [withdrawn(n) for (alert_id, name), n in last.items()
                if name == receiver.name and alert_id not in in_feed and n["event"] != "resolved"]
        for alert in sorted([*feed, *gone], key=lambda a: (a["start_ts"], a["alert_id"])):
            skipped = is_history(alert, receiver, now, backfill)
            for event, revision in changes(alert, last.get((alert["alert_id"], receiver.name)), receiver, now):
                nid = notification_id(alert["alert_id"], event, revision)
                out.append(Notice(
                    notification_id=nid, receiver=receiver.name, alert_id=alert["alert_id"], event=event,
                    revision=revision, severity=alert.get("severity"), cause=alert.get("cause"),
                    route=alert.get("route"), payload=json.dumps(payload(receiver, alert, event, revision, nid)),
                    status="skipped_backfill" if skipped else "pending",
                ))
    return out


def payload(receiver: Receiver, alert: dict[str, Any], event: str, revision: int, nid: str) -> dict[str, Any]:
    if isinstance(receiver, PagerDutyReceiver):
        return pagerduty_payload(alert, event, revision, nid)
    return webhook_payload(receiver.name, alert, event, revision, nid)


def wire_body(receiver: Receiver, payload: str) -> str:
    """The body as sent: the stored payload, with a PagerDuty receiver's routing key put first. The key is a
    credential: it stays in the config file, never in the outbox."""
    if isinstance(receiver, PagerDutyReceiver):
        return json.dumps({"routing_key": receiver.routing_key, **json.loads(payload)})
    return payload


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_or_none(text: str | None) -> Any:
    return json.loads(text) if text else None


def details(alert: dict[str, Any], event: str, revision: int, nid: str) -> dict[str, Any]:
    """What an operator needs beyond the headline, shared by both payload shapes."""
    return {
        "notification_id": nid, "event": event, "revision": revision, "alert_id": alert["alert_id"],
        "device_id": alert["device_id"], "cause": alert.get("cause"), "action": alert.get("action"),
        "route": alert.get("route"), "severity": alert.get("severity"), "rule": alert.get("rule_name"),
        "confidence": alert.get("confidence"), "max_score": alert.get("max_score"),
        "n_events": alert.get("n_events"), "families": _json_or_none(alert.get("families")),
        "top_features": _json_or_none(alert.get("top_features")), "start_ts": _iso(alert["start_ts"]),
        "end_ts": _iso(alert["end_ts"]), "acked_by": alert.get("acked_by"),
    }


def webhook_payload(receiver: str, alert: dict[str, Any], event: str, revision: int, nid: str) -> dict[str, Any]:
    """Prometheus Alertmanager's webhook body (version 4), one alert per notification: labels identify the
    incident, annotations say what it is; `notification_id` (also the Idempotency-Key header) lets the receiver
    drop a redelivery."""
    status = "resolved" if event == "resolved" else "firing"
    labels = {
        "alertname": alert.get("rule_name") or "itap_incident", "alert_id": alert["alert_id"],
        "device_id": alert["device_id"], "severity": (alert.get("severity") or "").lower(),
        "route": alert.get("route") or "", "rule": alert.get("rule_name") or "",
    }
    info = details(alert, event, revision, nid)
    annotations = {k: v if isinstance(v, str) else json.dumps(v) for k, v in info.items()
                   if k not in labels and v is not None}
    annotations["summary"] = f"{alert.get('severity')} {alert['device_id']}: {alert.get('cause')}"
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alert_id="{alert["alert_id"]}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {"alert_id": alert["alert_id"]},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": _iso(alert["start_ts"]),
            "endsAt": _iso(alert["end_ts"]) if status == "resolved" else ALERTMANAGER_NO_END,
            "generatorURL": "",
            "fingerprint": alert["alert_id"],
        }],
    }


def pagerduty_payload(alert: dict[str, Any], event: str, revision: int, nid: str) -> dict[str, Any]:
    """PagerDuty Events API v2 without its `routing_key` (see `wire_body`): `dedup_key` = alert_id, so a revision
    updates the open incident and `resolve` closes it (a resolve carries no payload)."""
    body: dict[str, Any] = {
        "event_action": "resolve" if event == "resolved" else "trigger",
        "dedup_key": alert["alert_id"],
    }
    if event != "resolved":
        families = _json_or_none(alert.get("families")) or {}
        body["payload"] = {
            "summary": f"{alert.get('severity')} {alert['device_id']}: {alert.get('cause')}"[:1024],
            "source": alert["device_id"],
            "severity": PAGERDUTY_SEVERITY.get(alert.get("severity") or "", "info"),
            "timestamp": _iso(alert["start_ts"]),
            "component": next(iter(families), None),
            "group": alert.get("route"),
            "class": alert.get("rule_name"),
            "custom_details": details(alert, event, revision, nid),
        }
    return body
