"""Pod identity beyond the installation's namespace (SPEC §7.6, `spec.identity.namespaces`): what the
operator renders for the api — read access to Pods exactly where it looks, a ClusterRole only for
`*`, and the matching ANYSENTRY_IDENTITY_NAMESPACES — every object a valid Kubernetes object, and the
pieces outside the namespace (which no owner reference can reach) labelled, replaced and removed by
the handler."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_kube import FakeKube
from test_operator_render import installation, k8s_errors  # noqa: E402 - sibling test module

from anysentry.operator import events, handlers_anysentry, render, render_rbac
from anysentry.operator.kube import AsyncKube
from anysentry.operator.loops import Runtime, Settings
from anysentry.resources.manifests import load_manifests, validate_object
from anysentry.resources.models import AnySentry

ROOT = Path(__file__).resolve().parents[3]
POD_READ = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
NAME = "anysentry:ns1:anysentry-api:pods"
API_ACCOUNT = [{"kind": "ServiceAccount", "name": "anysentry-api", "namespace": "ns1"}]


def rendered(namespaces: list[str] | None, **spec):
    identity = {} if namespaces is None else {"identity": {"namespaces": namespaces}}
    return render.render(installation({**identity, **spec}))


def pod_rules(role: dict) -> list[dict]:
    return [r for r in role["rules"] if "pods" in r["resources"]]


def outside(result) -> list[dict]:
    return [m for m in result.manifests if m["metadata"].get("namespace") != "ns1"]


def watched(result) -> str:
    return result.get("ConfigMap", "anysentry-config")["data"]["ANYSENTRY_IDENTITY_NAMESPACES"]


def test_by_default_the_api_reads_pods_only_in_its_own_namespace():
    for result in (rendered(None), rendered([])):
        assert pod_rules(result.get("Role", "anysentry-api")) == [POD_READ]
        assert outside(result) == []
        assert watched(result) == "ns1"


def test_listed_namespaces_get_a_role_and_binding_each_and_nothing_more():
    result = rendered(["agents", "ns1", "team-b"])
    assert watched(result) == "agents,ns1,team-b"
    assert pod_rules(result.get("Role", "anysentry-api")) == [POD_READ]  # its own namespace is listed
    found = {(m["kind"], m["metadata"]["namespace"], m["metadata"]["name"]) for m in outside(result)}
    assert found == {(kind, ns, NAME) for kind in ("Role", "RoleBinding") for ns in ("agents", "team-b")}
    for manifest in outside(result):
        assert k8s_errors(manifest) == [], manifest
        meta = manifest["metadata"]
        assert "ownerReferences" not in meta  # cannot cross namespaces: found by its labels instead
        assert meta["labels"]["anysentry.io/installation-namespace"] == "ns1"
        assert meta["labels"]["app.kubernetes.io/instance"] == "anysentry"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "anysentry-operator"
        if manifest["kind"] == "Role":
            assert manifest["rules"] == [POD_READ]
        else:
            assert manifest["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME}
            assert manifest["subjects"] == API_ACCOUNT
    assert not result.by_kind("ClusterRole") and not result.by_kind("ClusterRoleBinding")


def test_its_own_namespace_loses_pod_access_when_it_is_not_listed():
    result = rendered(["agents"])
    assert pod_rules(result.get("Role", "anysentry-api")) == []
    assert watched(result) == "agents"
    assert {m["metadata"]["namespace"] for m in outside(result)} == {"agents"}


@pytest.mark.parametrize("namespaces", [["*"], ["agents", "*"]])
def test_every_namespace_is_one_cluster_role_and_binding(namespaces):
    result = rendered(namespaces)
    assert watched(result) == "*"
    assert pod_rules(result.get("Role", "anysentry-api")) == []  # the ClusterRole covers its namespace too
    (role,) = result.by_kind("ClusterRole")
    (binding,) = result.by_kind("ClusterRoleBinding")
    assert outside(result) == [role, binding]
    for manifest in (role, binding):
        assert k8s_errors(manifest) == []
        assert manifest["metadata"]["name"] == NAME and "namespace" not in manifest["metadata"]
        assert "ownerReferences" not in manifest["metadata"]
    assert role["rules"] == [POD_READ]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}
    assert binding["subjects"] == API_ACCOUNT
    assert not result.by_kind("RoleBinding") or all(b["metadata"]["namespace"] == "ns1" for b in result.by_kind("RoleBinding"))


def test_installations_of_one_name_in_two_namespaces_do_not_share_rbac():
    first = render_rbac.identity_rbac(installation({"identity": {"namespaces": ["agents"]}}, namespace="team-a"))
    second = render_rbac.identity_rbac(installation({"identity": {"namespaces": ["agents"]}}, namespace="team-b"))
    assert {m["metadata"]["namespace"] for m in first + second} == {"agents"}
    assert {m["metadata"]["name"] for m in first}.isdisjoint({m["metadata"]["name"] for m in second})
    assert render_rbac.identity_selector(installation(namespace="team-a")) != render_rbac.identity_selector(installation(namespace="team-b"))


def test_changing_the_namespaces_rolls_the_api():
    hash_of = lambda r: r.get("Deployment", "anysentry-api")["spec"]["template"]["metadata"]["annotations"]["anysentry.io/config-hash"]  # noqa: E731
    assert hash_of(rendered(["agents"])) != hash_of(rendered(["*"])) != hash_of(rendered(None))


def test_the_schema_takes_namespaces_or_a_star_and_nothing_else():
    def errors(namespaces):
        _, found = validate_object({"apiVersion": "anysentry.io/v1alpha1", "kind": "AnySentry",
                                    "metadata": {"name": "a", "namespace": "ns1"}, "spec": {"identity": {"namespaces": namespaces}}})
        return [str(e) for e in found]

    assert errors(["agents", "team-b", "*"]) == []
    for bad in (["Agents"], ["team_b"], ["-x"], ["a" * 64], ["agents/*"]):
        assert any("identity.namespaces" in e for e in errors(bad)), bad


def test_the_example_validates_and_renders_valid_objects():
    (example,) = load_manifests(ROOT / "examples" / "cluster" / "anysentry-agent-namespaces.yaml").of_kind("AnySentry")
    assert example.spec.identity.namespaces
    example.metadata.namespace, example.metadata.uid = "security", "uid-1"
    result = render.render(example)
    assert outside(result)
    for manifest in result.manifests:
        assert k8s_errors(manifest) == [], (manifest["kind"], manifest["metadata"]["name"])


# ---------------------------------------------------------------------------------------------
# the handler: applied, replaced, removed by label


@pytest.fixture
def kube():
    events.reset()
    yield FakeKube()
    events.reset()


def put_installation(kube, namespaces, namespace="ns1") -> AnySentry:
    obj = kube.put({"apiVersion": "anysentry.io/v1alpha1", "kind": "AnySentry",
                    "metadata": {"name": "anysentry", "namespace": namespace},
                    "spec": {"storage": {"clickhouse": {"url": "http://ch:8123"}}, "identity": {"namespaces": namespaces}}})
    return AnySentry.model_validate(obj)


def rbac_outside(kube, installation_ns="ns1") -> set:
    return {(k, ns, n) for (k, ns, n), obj in kube.objects.items()
            if k in render_rbac.IDENTITY_KINDS and ns != installation_ns
            and obj["metadata"].get("labels", {}).get("anysentry.io/installation-namespace") == installation_ns}


async def test_the_handler_applies_replaces_and_removes_the_rbac_outside_the_namespace(kube):
    rt = Runtime(AsyncKube(kube), settings=Settings(tick_secs=1))
    other = put_installation(kube, ["agents"], namespace="team-z")  # another installation watching the same namespace
    await handlers_anysentry.apply_installation(rt.kube, other, rt)

    await handlers_anysentry.apply_installation(rt.kube, put_installation(kube, ["agents", "team-b"]), rt)
    assert rbac_outside(kube) == {(k, ns, NAME) for k in ("Role", "RoleBinding") for ns in ("agents", "team-b")}

    await handlers_anysentry.apply_installation(rt.kube, put_installation(kube, ["team-b"]), rt)
    assert rbac_outside(kube) == {("Role", "team-b", NAME), ("RoleBinding", "team-b", NAME)}

    await handlers_anysentry.apply_installation(rt.kube, put_installation(kube, ["*"]), rt)
    assert rbac_outside(kube) == {("ClusterRole", "", NAME), ("ClusterRoleBinding", "", NAME)}

    resource = put_installation(kube, ["*"])
    removed = await handlers_anysentry.remove_identity_rbac(rt.kube, resource)
    assert sorted(removed) == [f"ClusterRole/{NAME}", f"ClusterRoleBinding/{NAME}"]
    assert rbac_outside(kube) == set()
    # the other installation's Role in the same namespace is left alone throughout
    assert rbac_outside(kube, "team-z") == {("Role", "agents", "anysentry:team-z:anysentry-api:pods"),
                                            ("RoleBinding", "agents", "anysentry:team-z:anysentry-api:pods")}


async def test_a_refused_grant_is_a_warning_event_and_the_installation_still_applies(kube):
    rt = Runtime(AsyncKube(kube), settings=Settings(tick_secs=1))
    real_apply = kube.apply

    def refusing(manifest, **kw):
        if manifest["kind"].startswith("Cluster"):
            from anysentry.operator.kube import KubeError
            raise KubeError(403, "Forbidden", "clusterroles is forbidden")
        return real_apply(manifest, **kw)

    kube.apply = refusing
    applied = await handlers_anysentry.apply_installation(rt.kube, put_installation(kube, ["*"]), rt)
    assert "Deployment/anysentry-api" in applied and kube.get("ConfigMap", "ns1", "anysentry-config")
    (event,) = kube.events("IdentityAccessFailed")
    assert event["type"] == "Warning" and "ClusterRole" in event["message"] and "forbidden" in event["message"]
