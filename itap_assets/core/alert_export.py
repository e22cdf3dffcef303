"""The predecessor's `artifacts/alerts.json` shape, for people who consumed its artifacts.

One object per incident: `timestamp` (start, "YYYY-MM-DD HH:MM:SS" UTC), `device_id`, `severity`, `root_cause`,
`score` (max score relative to the device's threshold), `confidence`, `families` ([[family, percent], ...],
strongest first) and `rule_name`; ITAP adds `alert_id`, `end_timestamp`, `route`, `action`, `status` and the
operator state (`acked_by`, `silenced_until`) after them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


def _text(ts: datetime | None) -> str | None:
    return None if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S")


def predecessor_alert(alert: dict[str, Any]) -> dict[str, Any]:
    """One `itap.v_alerts` row as an entry of the predecessor's alerts.json."""
    shares = json.loads(alert["families"]) if alert.get("families") else {}
    return {
        "timestamp": _text(alert["start_ts"]),
        "device_id": alert["device_id"],
        "severity": alert["severity"],
        "root_cause": alert.get("cause"),
        "score": None if alert.get("max_score") is None else round(alert["max_score"], 4),
        "confidence": None if alert.get("confidence") is None else round(alert["confidence"], 2),
        "families": sorted(([k, round(v, 1)] for k, v in shares.items()), key=lambda kv: -kv[1]),
        "rule_name": alert.get("rule_name"),
        "alert_id": alert["alert_id"],
        "end_timestamp": _text(alert["end_ts"]),
        "route": alert.get("route"),
        "action": alert.get("action"),
        "status": alert["status"],
        "acked_by": alert.get("acked_by"),
        "silenced_until": _text(alert.get("silenced_until")),
    }
