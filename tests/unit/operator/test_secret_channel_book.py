"""The notification book and Secret-sourced channels, below the cluster: what a flush would store,
what a refresh keeps, and how an api replica hands a delivery over to the operator."""
from __future__ import annotations

import json

from anysentry.ops.standalone import apply_route
from anysentry.operator.loops import build_engine
from anysentry.ops.notifications import QUEUED

NS = "team-a"
URL = "https://hooks.example.com/services/T000/CANARY-PATH?token=CANARY-QUERY"
KEY = "CANARY-HMAC-KEY"
CID = f"chn_{NS}_pager_oncall"
REFS = {"webhookUrl": {"name": "pager-hook", "key": "url"}, "signingKey": {"name": "pager-hook", "key": "hmac"}}


def route(secret: str = "pager-hook") -> dict:
    return {"apiVersion": "anysentry.io/v1alpha1", "kind": "NotificationRoute",
            "metadata": {"name": "pager", "namespace": NS},
            "spec": {"match": {"minSeverity": "high"},
                     "receivers": [{"name": "oncall", "webhookUrlSecretRef": {"name": secret, "key": "url"},
                                    "hmacKeySecretRef": {"name": secret, "key": "hmac"}}]}}


def operator_with_route():
    engine = build_engine()
    apply_route(engine, route(), {"oncall": {"webhookUrl": URL, "signingKey": KEY}})
    return engine


def test_a_flush_stores_the_channel_without_its_values_and_a_refresh_keeps_them():
    engine = operator_with_route()
    notifier = engine.notifications
    changed, _ = notifier.channels.drain()
    stored = changed[CID]
    assert "CANARY" not in json.dumps(changed)
    assert stored["source"] == "secret" and stored["secretRef"] == REFS
    assert stored["endpointPreview"] == "https://hooks.example.com/..." and stored["signingKeyConfigured"] is True
    assert notifier.channel(CID)["webhookUrl"] == URL  # still held in memory

    assert notifier.channels.merge([(CID, False, stored)]) == 0  # its own row back: nothing changes
    assert notifier.channel(CID)["webhookUrl"] == URL and notifier.channel(CID)["signingKey"] == KEY
    elsewhere = {**stored, "secretRef": {"webhookUrl": {"name": "other", "key": "url"}}}
    notifier.channels.merge([(CID, False, elsewhere)])  # now names another Secret: the old values go
    assert "webhookUrl" not in notifier.channel(CID)
    item = notifier.channel_item(notifier.channel(CID))
    assert item["endpointPreview"] == "https://hooks.example.com/..." and "CANARY" not in json.dumps(item)


def test_reading_the_secret_again_is_not_audited_a_new_secret_is():
    engine = operator_with_route()
    engine.audit.drain()
    stored = engine.notifications.channels.drain()[0][CID]
    restarted = build_engine()
    restarted.notifications.channels.merge([(CID, False, stored)])
    apply_route(restarted, route(), {"oncall": {"webhookUrl": URL, "signingKey": KEY}})
    assert restarted.notifications.channel(CID)["webhookUrl"] == URL
    assert [r for r in restarted.audit.drain() if r.get("resourceId") == CID] == []
    apply_route(restarted, route("pager-hook-2"), {"oncall": {"webhookUrl": URL + "2", "signingKey": KEY}})
    assert [r["action"] for r in restarted.audit.drain() if r.get("resourceId") == CID] == ["notification.channel.updated"]


def test_an_api_replica_queues_the_delivery_for_the_operator_which_takes_it_once():
    operator = operator_with_route()
    stored = operator.notifications.channels.drain()[0][CID]
    replica = build_engine()
    replica.notifications.holds_secrets = False  # what mirror.attach sets in a cluster
    replica.notifications.channels.merge([(CID, False, stored)])
    replica.notifications.routes.load(operator.notifications.routes.values())
    alert = {"alertId": "alt_1", "kind": "incident", "severity": "critical", "title": "exfiltration", "labels": {}}
    assert replica.notifications.notify(alert, "resolved") == 1
    assert replica.notifications._queues == {}  # nothing to send from here
    (queued,) = replica.notifications.deliveries.values()
    assert queued["status"] == QUEUED and queued["_handoff"]["alert"]["alertId"] == "alt_1"
    assert "_handoff" not in replica.notifications.delivery_item(queued)
    config = replica.notifications.config({})
    assert config["deliveries"] == [] and config["summary"]["totalDeliveries"] == 0

    assert replica.notifications.take_over(queued) is False  # a replica never sends it
    changed, _ = replica.notifications.deliveries.drain()
    operator.notifications.deliveries.merge([(k, False, v) for k, v in changed.items()])
    entry = operator.notifications.deliveries.get(queued["deliveryId"])
    assert operator.notifications.take_over(entry) is True
    assert operator.notifications.take_over(entry) is False  # taken once
    (job,) = operator.notifications._queues[CID]
    assert job[0]["alertId"] == "alt_1" and job[3] == "resolved" and job[4] == queued["deliveryId"]
