"""The audit list through HTTP (SPEC §25, §3.6): records of management actions with actor headers,
filters, exact selectors (which ignore the time window), the auditId pin, summary, redaction, and
that reading it is never management-gated."""

from __future__ import annotations

TOKEN = "audit-admin-token"
ADMIN = {"X-AnySentry-Admin-Token": TOKEN}


async def actions(api) -> None:
    await api.data("PUT", "/agents/a1/metadata", {"workspacePath": "/w", "owner": "alice",
                                                   "note": "password=CANARYPW123456"},
                   headers={**ADMIN, "x-anysentry-actor": "alice@example.com", "x-anysentry-actor-name": "Alice",
                            "x-forwarded-for": "10.1.2.3, 10.0.0.1", "user-agent": "pytest"})
    await api.data("PUT", "/agents/a1/review", {"workspacePath": "/w", "decision": "confirmed_agent"},
                   headers={**ADMIN, "x-anysentry-actor": "bob"})
    await api.data("PUT", "/sources/src-1", {"name": "forwarder-1", "owner": "ops"}, headers=ADMIN)
    await api.data("POST", "/maintenance/windows", {"title": "patching", "targetType": "workspace", "targetId": "/w"},
                   headers=ADMIN, expect=201)


async def test_audit_list_filters_pins_and_summary(make_api):
    api = await make_api(admin_token=TOKEN)
    await actions(api)
    listing = await api.data("POST", "/audit/list", {})  # read-only: no token needed
    assert listing["total"] >= 3
    items = listing["items"]
    assert items[0]["at"] >= items[-1]["at"] and len(items[0]["at"]) == 19
    meta = next(i for i in items if i["action"] == "agent.metadata.updated")
    assert meta["schemaVersion"] == "anysentry.audit.v1" and meta["auditId"].startswith("aud_")
    assert meta["actor"] == {"type": "operator", "id": "alice@example.com", "displayName": "Alice",
                             "sourceIp": "10.1.2.3", "userAgent": "pytest"}
    assert meta["resourceType"] == "agent" and meta["resourceId"] == "a1" and meta["result"] == "success"
    assert "CANARYPW123456" not in str(listing)
    summary = listing["summary"]
    assert summary["totalRecords"] == listing["total"] and summary["agentActions"] == 2
    assert summary["sourceActions"] == 1 and summary["failureActions"] == 0

    by_action = await api.data("POST", "/audit/list", {"action": "agent.review.updated"})
    assert [i["actor"]["id"] for i in by_action["items"]] == ["bob"]
    by_actor = await api.data("POST", "/audit/list", {"actorId": "alice@example.com"})
    assert [i["action"] for i in by_actor["items"]] == ["agent.metadata.updated"]
    by_resource = await api.data("POST", "/audit/list", {"resourceType": "source", "resourceId": "src-1"})
    assert [i["action"] for i in by_resource["items"]] == ["source.updated"]
    by_text = await api.data("POST", "/audit/list", {"q": "FORWARDER-1"})
    assert [i["action"] for i in by_text["items"]] == ["source.updated"]

    pinned = await api.data("POST", "/audit/list", {"auditId": meta["auditId"]})
    assert [i["auditId"] for i in pinned["items"]] == [meta["auditId"]]
    union = await api.data("POST", "/audit/list", {"auditId": meta["auditId"], "action": "source.updated"})
    assert [i["action"] for i in union["items"]] == ["agent.metadata.updated", "source.updated"]
    limited = await api.data("POST", "/audit/list", {"limit": 1})
    assert len(limited["items"]) == 1 and limited["total"] == listing["total"]


async def test_selectors_ignore_the_window_and_filters_do_not(make_api):
    api = await make_api(admin_token=TOKEN)
    await actions(api)
    audit = api.services.audit
    old = audit.record("incident.updated", "incident", "inc_old", "old change", now=1_600_000_000_000,
                       details={"incidentId": "inc_old", "token": "abc"})
    assert old["details"]["token"] == "[redacted]"
    in_window = await api.data("POST", "/audit/list", {"action": "incident.updated"})
    assert in_window["total"] == 0  # last 3 h by default
    exact = await api.data("POST", "/audit/list", {"resourceType": "incident", "resourceId": "inc_old"})
    assert [i["auditId"] for i in exact["items"]] == [old["auditId"]]
    pinned = await api.data("POST", "/audit/list", {"auditId": old["auditId"]})
    assert pinned["total"] == 1 and pinned["items"][0]["at"].startswith("2020-09-13")
    custom = await api.data("POST", "/audit/list", {"timeType": "custom", "startTime": 1_599_999_000_000,
                                                    "endTime": 1_600_001_000_000})
    assert [i["auditId"] for i in custom["items"]] == [old["auditId"]]
