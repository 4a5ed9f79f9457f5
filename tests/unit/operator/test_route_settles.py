"""A NotificationRoute whose fields are longer than the notifier keeps (the CRD allows an agent of
256 characters, the notifier keeps 160) settles: applied again, it is not written (nor audited) again."""
from __future__ import annotations

from types import SimpleNamespace

from anysentry.operator import mirror_routes as mr
from anysentry.operator.loops import build_engine
from anysentry.ops.standalone import apply_route, route_differs, route_record

NS = "team-a"
RID = f"rou_{NS}_pager"
URL = "https://hooks.example.com/services/T000/B000/XXXX"


def route() -> dict:
    return {"apiVersion": "anysentry.io/v1alpha1", "kind": "NotificationRoute",
            "metadata": {"name": "pager", "namespace": NS, "uid": "uid-1"},
            "spec": {"match": {"agent": "a" * 200, "collector": "c" * 200, "text": "t" * 200},
                     "description": "pages the on-call, token=hunter2hunter2hunter2",
                     "receivers": [{"name": "oncall", "webhookUrlSecretRef": {"name": "pager-hook", "key": "url"}}]}}


def route_audits(engine) -> list[dict]:
    return [r for r in engine.audit.drain() if r.get("resourceId") == RID]


def test_a_route_with_a_long_agent_applied_twice_is_audited_once():
    engine = build_engine()
    apply_route(engine, route(), {"oncall": {"webhookUrl": URL}})
    assert len(engine.notifications.routes.get(RID)["agentId"]) == 160  # what the notifier keeps
    apply_route(engine, route(), {"oncall": {"webhookUrl": URL}})
    assert [r["action"] for r in route_audits(engine)] == ["notification.route.updated"]

    changed = route()
    changed["spec"]["match"]["agent"] = "b" * 200
    apply_route(engine, changed, {"oncall": {"webhookUrl": URL}})
    assert len(route_audits(engine)) == 1  # a real change is still written


def test_a_replica_holding_a_long_route_again_changes_nothing():
    replica = build_engine()
    routes = mr.RouteMirror(SimpleNamespace(ops=replica), kube=None, namespace=NS)
    routes.hold("ADDED", route(), {"oncall": (URL, "")})
    body = route_record(route(), [f"chn_{NS}_pager_oncall"])
    assert not route_differs(replica.notifications, body)
    writes = []
    create_route = replica.notifications.create_route
    replica.notifications.create_route = lambda *a, **kw: writes.append(a) or create_route(*a, **kw)
    routes.hold("MODIFIED", route())
    assert writes == []
    assert route_differs(replica.notifications, {**body, "team": "sre"})
