"""State changes per receiver (the diff of the feed against the last notice) and the payloads they are sent as."""

import json
import re
from datetime import datetime, timedelta

import pytest

from itap_assets.core.alert_export import predecessor_alert
from itap_assets.core.notifications import changes, is_history, notification_id, plan_notices, wire_body
from itap_assets.core.receivers import PagerDutyReceiver, WebhookReceiver

NOW = datetime(2026, 1, 2, 12, 0)
HOOK = WebhookReceiver(name="ops", type="webhook", url="http://127.0.0.1:1/hook")
PD = PagerDutyReceiver(name="pd", type="pagerduty", url="http://127.0.0.1:1/pd", routing_key="R1",
                       min_severity="warning", routes=("maintenance",))


def alert(**overrides) -> dict:
    row = {
        "alert_id": "a1", "device_id": "DEV-0001", "start_ts": NOW - timedelta(hours=1),
        "end_ts": NOW - timedelta(minutes=10), "severity": "CRITICAL", "rule_name": "bearing_wear",
        "cause": "Bearing wear", "route": "maintenance", "confidence": 0.8, "max_score": 4.2, "n_events": 7,
        "families": json.dumps({"Vibration": 71.5, "Temperature": 20.0}),
        "top_features": json.dumps([["vibration_g__rms_mid", 40.0]]), "action": "Inspect the bearing",
        "suppressed_by": None, "status": "firing", "acked_by": None, "silenced_until": None,
    }
    return row | overrides


def last(event="firing", revision=0, **overrides) -> dict:
    return {"event": event, "revision": revision, "severity": "CRITICAL", "cause": "Bearing wear",
            "route": "maintenance"} | overrides


def test_a_new_active_incident_fires_once():
    assert changes(alert(), None, HOOK, NOW) == [("firing", 0)]
    assert changes(alert(), last(), HOOK, NOW) == []


def test_a_changed_severity_cause_or_route_is_a_revision():
    assert changes(alert(severity="WARNING"), last(), HOOK, NOW) == [("revised", 1)]
    assert changes(alert(cause="Overheating"), last("revised", 1), HOOK, NOW) == [("revised", 2)]
    assert changes(alert(route="electrical"), last(), HOOK, NOW) == [("revised", 1)]


def test_resolution_closes_what_was_opened_and_a_resolved_incident_first_seen_fires_then_resolves():
    assert changes(alert(status="resolved"), last("revised", 2), HOOK, NOW) == [("resolved", 2)]
    assert changes(alert(status="resolved"), None, HOOK, NOW) == [("firing", 0), ("resolved", 0)]
    assert changes(alert(status="resolved"), last("resolved", 2), HOOK, NOW) == []
    assert changes(alert(), last("resolved", 2), HOOK, NOW) == [("firing", 3)]  # fires again


def test_suppressed_and_silenced_incidents_do_not_page_but_a_resolve_still_closes_the_page():
    assert changes(alert(suppressed_by="min_events:3"), None, HOOK, NOW) == []
    silenced = alert(silenced_until=NOW + timedelta(hours=1))
    assert changes(silenced, None, HOOK, NOW) == []
    assert changes(alert(severity="WARNING", silenced_until=NOW + timedelta(hours=1)), last(), HOOK, NOW) == []
    assert changes(alert(silenced_until=NOW - timedelta(minutes=1)), None, HOOK, NOW) == [("firing", 0)]
    assert changes(alert(status="resolved", silenced_until=NOW + timedelta(hours=1)), last(), HOOK, NOW) == [
        ("resolved", 0)]


def test_routes_and_minimum_severity_decide_which_incidents_a_receiver_opens():
    assert changes(alert(), None, PD, NOW) == [("firing", 0)]
    assert changes(alert(route="operations"), None, PD, NOW) == []
    assert changes(alert(severity="INFO"), None, PD, NOW) == []
    # once opened, the receiver hears the incident's changes even when they leave its filter
    assert changes(alert(severity="INFO"), last(), PD, NOW) == [("revised", 1)]


def test_backfills_and_old_evidence_are_history_unless_the_receiver_asks_for_them():
    assert not is_history(alert(), HOOK, NOW, backfill=False)
    assert is_history(alert(), HOOK, NOW, backfill=True)
    assert is_history(alert(end_ts=NOW - timedelta(hours=25)), HOOK, NOW, backfill=False)
    eager = HOOK.model_copy(update={"deliver_backfills": True})
    assert not is_history(alert(end_ts=NOW - timedelta(days=30)), eager, NOW, backfill=True)
    unlimited = HOOK.model_copy(update={"page_within_hours": None})
    assert not is_history(alert(end_ts=NOW - timedelta(days=30)), unlimited, NOW, backfill=False)


def test_notices_have_stable_ids_and_come_per_receiver_oldest_incident_first():
    feed = [alert(alert_id="b", start_ts=NOW - timedelta(minutes=30)), alert(alert_id="a")]
    notices = plan_notices(feed, {("b", "ops"): last()}, (HOOK, PD), NOW, backfill=False)
    assert [(n.receiver, n.alert_id, n.event) for n in notices] == [
        ("ops", "a", "firing"), ("pd", "a", "firing"), ("pd", "b", "firing")]
    assert notices[0].notification_id == notification_id("a", "firing", 0) != notification_id("a", "firing", 1)
    assert {n.status for n in notices} == {"pending"}
    assert {n.status for n in plan_notices(feed, {}, (HOOK,), NOW, backfill=True)} == {"skipped_backfill"}


@pytest.mark.parametrize("receiver", [HOOK, PD])
def test_an_incident_recomputing_no_longer_finds_is_resolved_as_last_described(receiver):
    (firing,) = plan_notices([alert()], {}, (receiver,), NOW, backfill=False)
    told = {("a1", receiver.name): last(payload=firing.payload)}
    (resolved,) = plan_notices([], told, (receiver,), NOW, backfill=False)
    assert (resolved.alert_id, resolved.event, resolved.revision) == ("a1", "resolved", 0)
    again = plan_notices([alert(status="resolved")], told, (receiver,), NOW, backfill=False)
    assert [n.payload for n in again] == [resolved.payload]  # the same close as if the feed had resolved it
    assert plan_notices([], {("a1", receiver.name): last("resolved", payload=resolved.payload)}, (receiver,), NOW,
                        backfill=False) == []


def test_webhook_payload_is_alertmanager_v4():
    (firing,) = plan_notices([alert()], {}, (HOOK,), NOW, backfill=False)
    body = json.loads(firing.payload)
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "ops"
    assert body["groupKey"] == '{}:{alert_id="a1"}'
    (a,) = body["alerts"]
    assert a["labels"] == {"alertname": "bearing_wear", "alert_id": "a1", "device_id": "DEV-0001",
                           "severity": "critical", "route": "maintenance", "rule": "bearing_wear"}
    assert a["annotations"]["cause"] == "Bearing wear" and a["annotations"]["action"] == "Inspect the bearing"
    assert a["annotations"]["notification_id"] == firing.notification_id
    assert a["startsAt"] == "2026-01-02T11:00:00.000000Z" and a["endsAt"] == "0001-01-01T00:00:00Z"
    assert a["fingerprint"] == "a1" and all(isinstance(v, str) for v in a["annotations"].values())
    (resolved,) = plan_notices([alert(status="resolved")], {("a1", "ops"): last()}, (HOOK,), NOW, False)
    a = json.loads(resolved.payload)["alerts"][0]
    assert a["status"] == "resolved" and a["endsAt"] == "2026-01-02T11:50:00.000000Z"


def test_pagerduty_payload_is_events_v2_with_the_alert_id_as_dedup_key():
    (firing,) = plan_notices([alert()], {}, (PD,), NOW, backfill=False)
    assert "R1" not in firing.payload  # the routing key is a credential: added when sending, never stored
    body = json.loads(wire_body(PD, firing.payload))
    assert list(body)[:3] == ["routing_key", "event_action", "dedup_key"]
    assert body["routing_key"] == "R1" and body["event_action"] == "trigger" and body["dedup_key"] == "a1"
    p = body["payload"]
    assert p["summary"] == "CRITICAL DEV-0001: Bearing wear" and p["source"] == "DEV-0001"
    assert (p["severity"], p["component"], p["group"], p["class"]) == ("critical", "Vibration", "maintenance",
                                                                      "bearing_wear")
    assert p["timestamp"] == "2026-01-02T11:00:00.000000Z"
    assert p["custom_details"]["notification_id"] == firing.notification_id
    assert p["custom_details"]["families"] == {"Vibration": 71.5, "Temperature": 20.0}
    (resolve,) = plan_notices([alert(status="resolved")], {("a1", "pd"): last()}, (PD,), NOW, False)
    assert json.loads(wire_body(PD, resolve.payload)) == {"routing_key": "R1", "event_action": "resolve",
                                                          "dedup_key": "a1"}
    assert wire_body(HOOK, firing.payload) == firing.payload


def test_export_has_the_predecessor_alerts_json_keys_first():
    row = predecessor_alert(alert())
    assert list(row)[:8] == ["timestamp", "device_id", "severity", "root_cause", "score", "confidence", "families",
                             "rule_name"]
    assert row["timestamp"] == "2026-01-02 11:00:00" and row["families"] == [["Vibration", 71.5],
                                                                              ["Temperature", 20.0]]
    assert (row["root_cause"], row["score"], row["status"]) == ("Bearing wear", 4.2, "firing")


@pytest.mark.parametrize("bad, message", [
    ({"type": "slack"}, "type='slack' must be one of webhook, pagerduty"),
    ({"type": "pagerduty"}, "routing_key is missing"),
    ({"type": "webhook", "min_severity": "huge"}, "min_severity='huge' must be one of INFO, WARNING, CRITICAL"),
    ({"type": "webhook", "rutes": ["ops"]}, "unknown key 'rutes'; did you mean 'routes'?"),
])
def test_a_bad_receiver_names_the_file_the_receiver_and_the_field(bad, message):
    from itap_assets.core.alerting import AlertRulesError, parse_alert_rules

    raw = {"rules": [{"name": "rest", "type": "fallback", "cause": "c", "action": "a", "route": "ops",
                      "severity": "INFO"}],
           "receivers": [{"name": "x", "url": "http://127.0.0.1:1/"} | bad]}
    with pytest.raises(AlertRulesError, match=r"^rules\.yaml: Receiver 'x': .*" + re.escape(message)):
        parse_alert_rules(raw, ["Vibration"], source="rules.yaml")
