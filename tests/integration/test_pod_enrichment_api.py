"""Kubernetes enrichment at ingest (SPEC §7.6) through a real API server: an observer line naming a
known pod comes out under the pod's agent identity, ids derived from it; other events are untouched."""

from __future__ import annotations

import orjson

from anysentry.events.ids import hash_id
from anysentry.events.timefmt import now_ms
from anysentry.events.workloads import WorkloadIndex

UID = "9c4e1f2a-3b5d-4e6f-8a7b-1c2d3e4f5a6b"
CONTAINER = "3" * 12 + "0123456789abcdef" * 3 + "4" * 4
NON_AGENT_UID = "0d1e2f3a-4b5c-4d6e-9f70-8192a3b4c5d6"


def pod(name: str, uid: str, labels: dict, container_id: str = "") -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "agents", "uid": uid,
                         "labels": {"pod-template-hash": "5c8d7f9b6", **labels},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "coder-5c8d7f9b6",
                                              "uid": "r-1", "controller": True}]},
            "spec": {"nodeName": "worker-2", "containers": [{"name": "agent", "image": "ghcr.io/acme/coder:2"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "agent", "containerID": f"containerd://{container_id}" if container_id else None}]}}


def line(session: str | None, agent: str = "python3") -> str:
    return orjson.dumps({"identity": {"agent": agent, "task": "4242", "session": session},
                         "process": {"pid": 4242, "comm": "bash"},
                         "event": {"ToolExec": {"pid": 4242, "argv": ["git", "status"], "cwd": "/work"}}}).decode()


def with_index(services) -> None:
    index = WorkloadIndex(cluster_id="ci")
    index.upsert(pod("coder-5c8d7f9b6-k2m9q", UID, {"anysentry.io/workload-kind": "agent"}, CONTAINER))
    index.upsert(pod("ingress-5c8d7f9b6-zz", NON_AGENT_UID, {"anysentry.io/workload-kind": "infrastructure"}))
    services.pipeline.workloads = index


async def listed(api, event_id: str) -> dict:
    await api.sync()
    items = (await api.data("POST", "/events/list", {"eventId": event_id}))["items"]
    assert len(items) == 1, items
    return items[0]


async def test_an_event_naming_a_pod_takes_its_agent_identity(make_api):
    api = await make_api(configure=with_index)
    at = now_ms() - 1_000  # explicit, so the expected ids can be computed; inside the default list window
    answer = await api.data("POST", "/ingest", {"line": line(UID), "at": at})
    assert answer["accepted"] is True
    item = await listed(api, answer["eventId"])
    instance = f"k8s:{UID}:agent"
    assert (item["agentId"], item["sessionId"], item["workspacePath"]) == ("coder", instance, "agents/coder-5c8d7f9b6-k2m9q")
    attribution = item["attribution"]
    assert attribution["source"] == "kubernetes" and attribution["classification"] == "confirmed_agent"
    assert attribution["agentScopeId"] == "coder" and attribution["agentInstanceId"] == instance
    assert attribution["physicalWorkloadId"] == "k8s:ci:agents/coder-5c8d7f9b6-k2m9q/agent"
    assert attribution["workloadRef"]["podUid"] == UID and attribution["workloadRef"]["nodeName"] == "worker-2"
    assert item["effectiveClassification"] == "confirmed_agent" and item["judgment"]["profile"] == "full"
    assert item["runtime"] == "kubernetes"
    assert answer["traceId"] == item["traceId"] == hash_id("tr", ["agents/coder-5c8d7f9b6-k2m9q", "coder", instance])
    assert answer["eventId"] == hash_id("evt", [at, "ToolExec", "coder", instance, line(UID)])
    assert answer["spanId"] == hash_id("sp", [at, "ToolExec", "coder", instance, line(UID)])
    assert answer["runId"] == UID  # runId still follows identity.session (§7.4)


async def test_a_container_id_in_the_agent_field_is_matched_too(make_api):
    api = await make_api(configure=with_index)
    body = {"events": [{"line": line(None, agent=CONTAINER[:12])}, {"line": line(None, agent=CONTAINER)}]}
    answer = await api.data("POST", "/ingest/batch", body)
    assert answer["acceptedEvents"] == 2
    for result in answer["items"]:
        item = await listed(api, result["eventId"])
        assert item["agentId"] == "coder" and item["sessionId"] == f"k8s:{UID}:agent"
        assert item["attribution"]["workloadRef"]["containerId"] == f"containerd://{CONTAINER}"


async def test_unknown_and_already_attributed_events_are_left_alone(make_api):
    api = await make_api(configure=with_index)
    unknown = await api.data("POST", "/ingest", {"line": line("11111111-2222-4333-8444-555555555555")})
    item = await listed(api, unknown["eventId"])
    assert (item["agentId"], item["sessionId"], item["workspacePath"]) == (
        "python3", "11111111-2222-4333-8444-555555555555", "/work")
    assert item.get("attribution") in (None, {}) and item["judgment"]["profile"] == "l1_only"

    given = {"classification": "probable_agent", "source": "forwarder", "confidence": 0.7, "reason": "lineage"}
    attributed = await api.data("POST", "/ingest", {"line": line(UID), "attribution": given})
    item = await listed(api, attributed["eventId"])
    assert (item["agentId"], item["sessionId"]) == ("python3", UID)
    assert item["attribution"]["source"] == "forwarder" and item["attribution"]["classification"] == "probable_agent"


async def test_a_non_agent_pod_is_discarded_by_routing(make_api):
    api = await make_api(configure=with_index)
    answer = await api.data("POST", "/ingest", {"line": line(NON_AGENT_UID)})
    assert answer == {"accepted": False, "reason": "unparseable event", "sourceId": None}


async def test_api_events_are_not_enriched(make_api):
    api = await make_api(configure=with_index)
    answer = await api.data("POST", "/ingest/events", {"eventKind": "ToolExec", "agentId": UID, "sessionId": UID,
                                                       "command": "git status"})
    result = answer["items"][0] if "items" in answer else answer
    item = await listed(api, result["eventId"])
    assert item["agentId"] == UID and item["source"] == "api" and item.get("attribution") in (None, {})
