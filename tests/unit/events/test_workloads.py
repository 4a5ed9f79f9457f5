"""The pod index behind Kubernetes enrichment (SPEC §7.6, §7.7): pods as the API returns them,
matched by UID and container ids, classified by their labels, named after their workloads."""

from __future__ import annotations

import pytest

from anysentry.events.workloads import EnrichSettings, LabelSelector, WorkloadIndex

UID = "5f2b8c1e-7d4a-4c3b-9e21-0a1b2c3d4e5f"
AGENT_ID = "a" * 8 + "0123456789abcdef" * 3 + "b" * 8           # 64 hex
SIDECAR_ID = "c" * 8 + "fedcba9876543210" * 3 + "d" * 8
OLD_AGENT_ID = "e" * 64


def pod(name="coder-7d9f8b6c5-x2x4z", namespace="agents", uid=UID, labels=None, owner=("ReplicaSet", "coder-7d9f8b6c5"),
        containers=("agent", "proxy"), statuses=None, node="node-1"):
    """A Pod as `GET /api/v1/namespaces/{ns}/pods/{name}` returns it (the fields the index reads)."""
    metadata = {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": "812",
                "labels": {"app": "coder", "pod-template-hash": "7d9f8b6c5",
                           **({"anysentry.io/workload-kind": "agent"} if labels is None else labels)}}
    if owner:
        metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                        "uid": "0e9c2b1a-0000-4000-8000-000000000001", "controller": True,
                                        "blockOwnerDeletion": True}]
    if statuses is None:
        statuses = [
            {"name": "agent", "image": "ghcr.io/acme/coder:1.4", "imageID": "ghcr.io/acme/coder@sha256:" + "1" * 64,
             "containerID": f"containerd://{AGENT_ID}", "ready": True, "restartCount": 1, "started": True,
             "state": {"running": {"startedAt": "2025-06-01T10:00:00Z"}},
             "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "containerID": f"containerd://{OLD_AGENT_ID}"}}},
            {"name": "proxy", "image": "envoyproxy/envoy:v1.30", "imageID": "", "containerID": f"containerd://{SIDECAR_ID}",
             "ready": True, "restartCount": 0, "state": {"running": {"startedAt": "2025-06-01T10:00:00Z"}}, "lastState": {}},
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"nodeName": node, "containers": [{"name": c, "image": f"registry.local/{c}:1"} for c in containers]},
            "status": {"phase": "Running", "podIP": "10.0.0.7", "containerStatuses": statuses}}


@pytest.fixture
def index() -> WorkloadIndex:
    return WorkloadIndex(cluster_id="prod-eu")


def test_pod_uid_names_the_agent_container_of_a_deployment(index):
    assert index.upsert(pod()) is True
    found = index.match(UID)
    assert found is not None
    assert found.overrides() == {
        "agentId": "coder", "sessionId": f"k8s:{UID}:agent", "workspacePath": "agents/coder-7d9f8b6c5-x2x4z",
        "attribution": found.attribution()}
    attribution = found.attribution()
    assert attribution["classification"] == "confirmed_agent" and attribution["confidence"] == 1.0
    assert attribution["monitored"] is True and attribution["source"] == "kubernetes"
    assert attribution["agentScopeId"] == "coder" and attribution["agentInstanceId"] == f"k8s:{UID}:agent"
    assert attribution["physicalWorkloadId"] == "k8s:prod-eu:agents/coder-7d9f8b6c5-x2x4z/agent"
    assert attribution["workloadRef"] == {
        "kind": "Deployment", "name": "coder", "namespace": "agents", "podName": "coder-7d9f8b6c5-x2x4z",
        "podUid": UID, "nodeName": "node-1", "containerName": "agent", "containerImage": "registry.local/agent:1",
        "containerId": f"containerd://{AGENT_ID}", "ownerKind": "ReplicaSet", "ownerName": "coder-7d9f8b6c5"}
    assert "matched by pod uid" in attribution["evidence"]
    assert "anysentry.io/workload-kind=agent" in attribution["reason"]


@pytest.mark.parametrize("key", [AGENT_ID, AGENT_ID[:12], f"containerd://{AGENT_ID}", OLD_AGENT_ID, OLD_AGENT_ID[:12]])
def test_container_ids_in_every_form_name_their_container(index, key):
    index.upsert(pod())
    found = index.match(key)
    assert found is not None and found.agent_instance_id == f"k8s:{UID}:agent"


def test_a_sidecar_container_id_names_the_sidecar(index):
    index.upsert(pod())
    for key in (SIDECAR_ID, SIDECAR_ID[:12]):
        found = index.match(key)
        assert found.agent_scope_id == "coder" and found.agent_instance_id == f"k8s:{UID}:proxy"
        assert dict(found.workload_ref)["containerImage"] == "registry.local/proxy:1"


@pytest.mark.parametrize("key", [AGENT_ID[:13], AGENT_ID[:11], AGENT_ID.upper()[:12] + "x", "coder", "", UID[:12]])
def test_other_keys_match_nothing(index, key):
    index.upsert(pod())
    assert index.match(key) is None


def test_agent_container_label_picks_the_container_a_uid_names(index):
    index.upsert(pod(labels={"anysentry.io/workload-kind": "agent", "anysentry.io/agent-container": "proxy"}))
    assert index.match(UID).agent_instance_id == f"k8s:{UID}:proxy"
    index.upsert(pod(labels={"anysentry.io/workload-kind": "agent", "anysentry.io/agent-container": "nope"}))
    found = index.match(UID)
    assert found.agent_instance_id == f"k8s:{UID}:agent"
    assert any("names no container" in e for e in found.evidence)


def test_agent_id_label_alone_is_a_probable_agent_named_by_the_label(index):
    index.upsert(pod(labels={"anysentry.io/agent-id": "research-assistant"}))
    attribution = index.match(UID).attribution()
    assert attribution["classification"] == "probable_agent" and attribution["confidence"] == 0.8
    assert index.match(UID).overrides()["agentId"] == "research-assistant"


def test_selector_match_and_agent_id_label_is_confirmed_with_the_label_as_scope(index):
    index.upsert(pod(labels={"anysentry.io/workload-kind": "agent", "anysentry.io/agent-id": "coder-prod"}))
    found = index.match(UID)
    assert found.classification == "confirmed_agent" and found.agent_scope_id == "coder-prod"


@pytest.mark.parametrize("kind", ["non-agent", "infrastructure"])
def test_non_agent_pods_keep_the_event_identity_and_only_gain_attribution(index, kind):
    index.upsert(pod(labels={"anysentry.io/workload-kind": kind, "anysentry.io/agent-id": "x"}))
    found = index.match(AGENT_ID)
    overrides = found.overrides()
    assert set(overrides) == {"attribution"}
    assert overrides["attribution"]["classification"] == "non_agent"
    assert overrides["attribution"]["monitored"] is False
    assert kind in overrides["attribution"]["reason"]


@pytest.mark.parametrize("labels", [{}, {"anysentry.io/workload-kind": "batch"}, {"app": "web"}])
def test_pods_their_labels_say_nothing_of_are_not_indexed(index, labels):
    assert index.upsert(pod(labels=labels)) is False
    assert index.match(UID) is None and index.match(AGENT_ID) is None and len(index) == 0


@pytest.mark.parametrize("owner, name, scope, kind", [
    (("StatefulSet", "planner"), "planner-0", "planner", "StatefulSet"),
    (("DaemonSet", "node-agent"), "node-agent-q7k2p", "node-agent", "DaemonSet"),
    (("Job", "eval-run-42"), "eval-run-42-8hxkz", "eval-run-42", "Job"),
    (("ReplicaSet", "standalone-rs"), "standalone-rs-abcde", "standalone-rs", "ReplicaSet"),  # no template-hash suffix
    (None, "scratch", "scratch", "Pod"),
])
def test_scope_is_the_owning_workload(index, owner, name, scope, kind):
    index.upsert(pod(name=name, owner=owner))
    found = index.match(UID)
    assert found.agent_scope_id == scope and dict(found.workload_ref)["kind"] == kind
    assert found.workspace_path == f"agents/{name}"


def test_pods_without_container_ids_yet_match_by_uid_only(index):
    index.upsert(pod(statuses=[]))
    found = index.match(UID)
    assert found is not None and "containerId" not in dict(found.workload_ref)
    assert index.match(AGENT_ID) is None


def test_removal_and_relabelling_drop_every_key(index):
    index.upsert(pod())
    assert index.remove(UID) is True
    assert [index.match(k) for k in (UID, AGENT_ID, AGENT_ID[:12], SIDECAR_ID)] == [None] * 4
    assert index.remove(UID) is False
    index.upsert(pod())
    index.upsert(pod(labels={"app": "coder"}))  # the agent label was taken off
    assert index.match(UID) is None and index.match(AGENT_ID) is None and len(index) == 0


def test_a_restarted_container_is_found_by_its_new_id(index):
    index.upsert(pod())
    new_id = "f" * 64
    statuses = [{"name": "agent", "containerID": f"containerd://{new_id}", "lastState": {}}]
    index.upsert(pod(statuses=statuses))
    assert index.match(new_id[:12]).agent_instance_id == f"k8s:{UID}:agent"
    assert index.match(AGENT_ID) is None


def test_a_relisting_drops_vanished_pods_of_its_namespace_only(index):
    other_uid = "11111111-2222-4333-8444-555555555555"
    third_uid = "66666666-7777-4888-9999-000000000000"
    index.upsert(pod())
    index.upsert(pod(name="tools-0", namespace="tools", uid=other_uid, statuses=[]))
    index.replace([pod(name="fresh", uid=third_uid, statuses=[])], namespace="agents")
    assert index.match(UID) is None
    assert index.match(other_uid) is not None and index.match(third_uid) is not None
    index.replace([], namespace=None)
    assert len(index) == 0 and index.match(other_uid) is None


def test_a_custom_selector_confirms_and_the_non_agent_label_still_wins():
    index = WorkloadIndex("team in (ml, research),tier!=test")
    index.upsert(pod(labels={"team": "ml"}))
    assert index.match(UID).classification == "confirmed_agent"
    index.upsert(pod(labels={"team": "ml", "tier": "test"}))
    assert index.match(UID) is None
    index.upsert(pod(labels={"team": "ml", "anysentry.io/workload-kind": "infrastructure"}))
    assert index.match(UID).classification == "non_agent"
    index.upsert(pod(labels={"team": "web", "anysentry.io/workload-kind": "agent"}))
    assert index.match(UID).classification == "confirmed_agent"  # the label the SPEC names always means agent


@pytest.mark.parametrize("text, labels, expected", [
    ("a=b", {"a": "b"}, True), ("a==b", {"a": "c"}, False), ("a!=b", {}, True), ("a", {"a": ""}, True),
    ("!a", {"a": "x"}, False), ("x/a notin (b, c)", {"x/a": "d"}, True), ("a in (b,c),d", {"a": "c"}, False),
])
def test_label_selector_semantics(text, labels, expected):
    assert LabelSelector.parse(text).matches(labels) is expected


def test_settings_from_the_environment():
    default = EnrichSettings.from_env({})
    assert default.enabled and default.namespaces is None and default.cluster_id == "default-cluster"
    assert default.selector.text == "anysentry.io/workload-kind=agent"
    custom = EnrichSettings.from_env({"ANYSENTRY_KUBE_ENRICH": "off", "ANYSENTRY_IDENTITY_NAMESPACES": " agents, ml ,agents",
                                      "ANYSENTRY_CLUSTER_ID": "eu-1", "ANYSENTRY_AGENT_LABEL_SELECTOR": "role=agent"})
    assert not custom.enabled and custom.namespaces == ("agents", "ml") and custom.cluster_id == "eu-1"
    assert EnrichSettings.from_env({"ANYSENTRY_IDENTITY_NAMESPACES": "agents,*"}).namespaces is None
    with pytest.raises(ValueError, match="ANYSENTRY_AGENT_LABEL_SELECTOR: invalid label selector requirement 'a in b'"):
        EnrichSettings.from_env({"ANYSENTRY_AGENT_LABEL_SELECTOR": "x=y,a in b"})
