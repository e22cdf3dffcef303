"""Delivery end to end: a real HTTP receiver on 127.0.0.1, the graph materialized twice and a backfill once, a
delivery process killed mid-request; every state change arrives exactly once (after the receiver drops the one
redelivery by its notification id), in order, as the outbox recorded it; operator state survives recomputation."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import yaml

from itap_assets import feed
from itap_assets.core.notifications import wire_body
from itap_assets.definitions import all_assets
from itap_assets.jobs import notification_job, scoring_job, telemetry_job
from itap_assets.partitions import range_tags
from itap_assets.resources import alert_rules_path
from itap_assets.sensors import alert_delivery
from itap_assets_tests.conftest import Pipeline, run_graph, write_config
from itap_assets_tests.http_receiver import Receiver

DEVICES = ["DEV-0001", "DEV-0002"]
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
CONFIG = {"simulation": {"devices": 2, "days": 3, "sample_interval_s": 60, "fault_rate": 3.0, "seed": 3}}


@pytest.fixture(scope="module")
def receiver():
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, receiver) -> Pipeline:
    root = tmp_path_factory.mktemp("delivery")
    rules = yaml.safe_load(Path(alert_rules_path()).read_text(encoding="utf-8"))
    fast = {"backoff_s": 0.01, "max_attempts": 4, "timeout_s": 5, "page_within_hours": None}
    rules["receivers"] = [
        {"name": "ops_hook", "type": "webhook", "url": f"{receiver.url}/hook", **fast},
        {"name": "pager", "type": "pagerduty", "url": f"{receiver.url}/pd", "routing_key": "R0UT1NG",
         "min_severity": "WARNING", **fast},
    ]
    rules_path = root / "alert_rules.yaml"
    rules_path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    p = Pipeline(write_config(root / "itap.yaml", CONFIG), root / "itap.duckdb", dg.DagsterInstance.ephemeral(),
                 rules_path=str(rules_path))
    yield p
    p.instance.dispose()


def outbox(p: Pipeline):
    return p.sql("SELECT * FROM itap.notification_outbox ORDER BY seq")


def rescore(p: Pipeline, days: list[str], tags: dict[str, str] | None = None, jobs=(scoring_job,)):
    """`jobs` then notification_job over `days` × every device, as the alert_delivery sensor would run them."""
    runs = [dg.materialize(all_assets, instance=p.instance, resources=p.resources(), selection=job.selection,
                           tags={**range_tags(f"{days[0]}|{DEVICES[0]}", f"{days[-1]}|{DEVICES[-1]}"), **(tags or {})})
            for job in jobs]
    return all(r.success for r in runs), deliver(p, tags)


def deliver(p: Pipeline, tags: dict[str, str] | None = None):
    return dg.materialize(all_assets, instance=p.instance, resources=p.resources(),
                          selection=notification_job.selection, tags=tags or {})


def test_every_state_change_is_delivered_exactly_once_in_order(deployment, receiver):
    p = deployment
    receiver.actions["/hook"] += [500, 429]  # the first notification needs three attempts
    receiver.actions["/pd"] += [400]         # a 4xx is not retried within the run
    assert all(r.success for r in run_graph(p, DEVICES, DAYS[:2]))

    feed_rows = p.sql("SELECT * FROM itap.v_alerts WHERE suppressed_by IS NULL")
    assert feed_rows.height >= 2, "the small fleet should page at least twice"
    box = outbox(p)
    hook = box.filter(box["receiver"] == "ops_hook")
    assert set(hook["alert_id"]) == set(feed_rows["alert_id"])
    assert set(hook["event"]) <= {"firing", "resolved"} and set(hook["status"]) == {"sent"}
    attempts = p.sql("SELECT * FROM itap.notification_attempts ORDER BY attempted_at")
    first = attempts.filter((attempts["notification_id"] == hook["notification_id"][0])
                            & (attempts["receiver"] == "ops_hook"))
    assert first["http_status"].to_list() == [500, 429, 200]
    pager = box.filter(box["receiver"] == "pager")
    assert pager.height >= 1 and pager["status"][0] == "failed"
    unsent = pager.filter(pager["status"] != "sent").height  # the failed one and any later one of its incident
    assert attempts.filter((attempts["receiver"] == "pager") & (attempts["http_status"] == 400)).height == 1

    # the second materialization finds nothing new: nothing is sent again, and the failed notice is resent
    acked = feed_rows["alert_id"][0]
    feed.acknowledge(acked, "alice", "on it", db=p.db_path)
    sent_before = len(receiver.requests)
    scoring, delivery = rescore(p, DAYS[:2])
    assert scoring and delivery.success
    assert outbox(p).height == box.height
    assert set(outbox(p)["status"]) == {"sent"}
    assert [r["path"] for r in receiver.requests[sent_before:]] == ["/pd"] * unsent
    state = p.sql(f"SELECT acked_by, ack_note FROM itap.v_alerts WHERE alert_id = '{acked}'")
    assert state.row(0) == ("alice", "on it")

    # a backfill of a day not seen yet records its state changes as history and pages nothing
    sent_before = len(receiver.requests)
    scoring, delivery = rescore(p, DAYS[2:], tags={"dagster/backfill": "bf1"}, jobs=(telemetry_job, scoring_job))
    assert scoring and delivery.success
    history = outbox(p).filter(outbox(p)["seq"] > box["seq"].max())
    assert history.height >= 1 and set(history["status"]) == {"skipped_backfill"}
    deliver(p)
    assert len(receiver.requests) == sent_before
    with dg.build_sensor_context(instance=p.instance) as context:  # scheduled operation: the sensor knows too
        tick = alert_delivery(context)
    assert tick.run_requests[0].run_config == {"ops": {"alert_notifications": {"config": {"backfill": True}}}}
    with dg.build_sensor_context(instance=p.instance, cursor=tick.cursor) as context:
        assert isinstance(alert_delivery(context), dg.SkipReason)  # no alerts materialization since

    # the lifecycle moves on (what the alerts step's later runs write, set here directly): two closed incidents
    # fire again; then one is revised and the other resolves, delivered by a process killed with its first POST
    # in flight
    latest = p.sql("SELECT alert_id, event, status FROM itap.notification_outbox WHERE receiver = 'ops_hook' "
                   "QUALIFY row_number() OVER (PARTITION BY alert_id ORDER BY seq DESC) = 1")
    revised, resolved = sorted(latest.filter((latest["event"] == "resolved") & (latest["status"] == "sent"))
                               ["alert_id"])[:2]
    p.sql(f"UPDATE alerts SET status = 'firing' WHERE alert_id IN ('{revised}', '{resolved}')")
    assert deliver(p).success
    p.sql(f"UPDATE alerts SET cause = 'Revised cause' WHERE alert_id = '{revised}'")
    p.sql(f"UPDATE alerts SET status = 'resolved' WHERE alert_id = '{resolved}'")
    before_crash = len(receiver.requests)
    receiver.actions["/hook"].append("kill")
    killed = subprocess.Popen([sys.executable, "-c", (
        "import sys; from itap_assets.delivery import record_notices, send_pending; "
        "from itap_assets.resources import AlertRules; "
        "receivers = AlertRules(path=sys.argv[1], config_path=sys.argv[2]).rules.receivers; "
        "record_notices(sys.argv[3], receivers, backfill=False); send_pending(sys.argv[3], receivers)"),
        str(p.rules_path), str(p.config_path), str(p.db_path)])
    receiver.victim = killed.pid
    assert killed.wait(timeout=120) == -signal.SIGKILL
    in_flight = receiver.requests[before_crash]
    assert p.sql(f"SELECT status FROM itap.notification_outbox WHERE notification_id = '{in_flight['key']}' "
                 "AND receiver = 'ops_hook'").row(0) == ("pending",)
    assert deliver(p).success

    box = outbox(p)
    assert set(box["status"]) == {"sent", "skipped_backfill"}
    assert not box["payload"].str.contains("R0UT1NG").any()  # the routing key stays in the config
    receivers = {r.name: r for r in p.resources()["alert_rules"].rules.receivers}
    sent = box.filter(box["status"] == "sent")
    for path, name in (("/hook", "ops_hook"), ("/pd", "pager")):
        got = receiver.accepted(path)
        counts = Counter(r["key"] for r in got)
        mine = sent.filter(sent["receiver"] == name)
        assert set(counts) == set(mine["notification_id"])  # every state change arrived, nothing else did
        # the one redelivery is the request in flight when the process died; the receiver drops it by its id
        assert {k: n for k, n in counts.items() if n > 1} == ({in_flight["key"]: 2} if path == "/hook" else {})
        # each receiver heard each incident's changes in the order they happened, with the recorded payloads
        first_seen = list(dict.fromkeys(r["key"] for r in got))
        order = {nid: i for i, nid in enumerate(first_seen)}
        for _, events in mine.group_by("alert_id"):
            assert sorted(events["notification_id"], key=order.get) == events.sort("seq")["notification_id"].to_list()
        bodies = {r["key"]: r["body"] for r in got}
        assert all(bodies[n] == wire_body(receivers[name], payload)
                   for n, payload in mine.select("notification_id", "payload").iter_rows())
        for nid, alert_id, event in mine.select("notification_id", "alert_id", "event").iter_rows():
            body = json.loads(bodies[nid])
            if path == "/hook":  # Alertmanager webhook v4
                (entry,) = body["alerts"]
                assert body["version"] == "4" and body["receiver"] == "ops_hook"
                assert (entry["fingerprint"], entry["annotations"]["notification_id"]) == (alert_id, nid)
                assert entry["status"] == body["status"] == ("resolved" if event == "resolved" else "firing")
            else:  # PagerDuty Events v2
                assert (body["routing_key"], body["dedup_key"]) == ("R0UT1NG", alert_id)
                assert body["event_action"] == ("resolve" if event == "resolved" else "trigger")
    hook_events = sent.filter(sent["receiver"] == "ops_hook")
    assert hook_events.filter(hook_events["alert_id"] == revised)["event"].to_list()[-4:] == [
        "firing", "resolved", "firing", "revised"]
    assert hook_events.filter(hook_events["alert_id"] == resolved)["event"].to_list()[-4:] == [
        "firing", "resolved", "firing", "resolved"]

    # the acknowledgement survived every recomputation of alerts
    assert p.sql(f"SELECT acked_by FROM itap.v_alerts WHERE alert_id = '{acked}'").row(0) == ("alice",)
