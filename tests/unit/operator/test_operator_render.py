"""The manifests an AnySentry renders are valid Kubernetes objects, least-privilege and owned.

Every rendered object is validated with `jsonschema` against the Kubernetes API server's own
OpenAPI v2 definitions (vendored under k8s_openapi/, made by tools/k8s/dump-openapi.py from the
local control plane), tightened the way a strict API server is: unknown fields are errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft4Validator

from anysentry.operator import render
from anysentry.resources.manifests import load_manifests, validate_object
from anysentry.resources.models import AnySentry

ROOT = Path(__file__).resolve().parents[3]
OPENAPI = json.loads((Path(__file__).parent / "k8s_openapi" / "definitions.json").read_text())
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def _strict(definitions: dict) -> dict:
    out = copy.deepcopy(definitions)
    for name, node in out.items():
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False  # an unknown (misspelt) field is an error
    # v2 says "string" for both; the API server takes an integer too
    out[INT_OR_STRING] = {"type": ["integer", "string"]}
    out[QUANTITY] = {"type": ["integer", "string"], "pattern": r"^[0-9+\-.eEkKMGTPi m]+$"}
    return out


DEFINITIONS = _strict(OPENAPI["definitions"])
_VALIDATORS: dict[str, Draft4Validator] = {}


def k8s_errors(manifest: dict) -> list[str]:
    kind = manifest["kind"]
    if manifest["apiVersion"].startswith("anysentry.io/"):
        _, errors = validate_object(manifest)
        return [str(e) for e in errors]
    if kind not in _VALIDATORS:
        ref = OPENAPI["kinds"][kind]
        _VALIDATORS[kind] = Draft4Validator({"definitions": DEFINITIONS, "$ref": f"#/definitions/{ref}"})
    gvk = DEFINITIONS[OPENAPI["kinds"][kind]]["x-kubernetes-group-version-kind"][0]
    expected = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _VALIDATORS[kind].iter_errors(manifest)]
    if manifest["apiVersion"] != expected:
        errors.append(f"apiVersion {manifest['apiVersion']} != {expected}")
    return errors


def installation(spec: dict | None = None, name: str = "anysentry", namespace: str = "ns1") -> AnySentry:
    obj = {"apiVersion": "anysentry.io/v1alpha1", "kind": "AnySentry",
           "metadata": {"name": name, "namespace": namespace, "uid": "0b7e-uid", "generation": 1}, "spec": spec or {}}
    resource, errors = validate_object(obj)
    assert not errors, errors
    resource.metadata.uid = "0b7e-uid"
    return resource


EXAMPLE = load_manifests(ROOT / "examples" / "resources" / "anysentry.yaml").of_kind("AnySentry")[0]
VARIANTS = {
    "example": EXAMPLE.to_k8s()["spec"],
    "minimal": {},
    "external": {"storage": {"clickhouse": {"url": "http://ch.db:8123", "database": "sec",
                                            "credentialsSecretRef": {"name": "ch-creds"}}},
                 "ui": {"enabled": False}, "collector": {"enabled": False}},
    "external-no-creds": {"storage": {"clickhouse": {"url": "https://ch.db:8443"}},
                          "judge": {"failClosed": True, "deepInvestigation": {"url": "http://l3:9000"}}},
    "tolerations": {"collector": {"tolerations": [{"operator": "Exists"}, {"key": "gpu", "operator": "Equal", "value": "a100",
                                                                         "effect": "NoExecute", "tolerationSeconds": 60}],
                                  "resources": {"limits": {"cpu": 1, "memory": "300Mi"}}},
                    "api": {"replicas": 1, "image": "registry.local/anysentry:dev"}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_manifest_is_a_valid_kubernetes_object(variant):
    resource = installation(VARIANTS[variant])
    rendered = render.render(resource)
    assert rendered.manifests
    for manifest in rendered.manifests:
        assert k8s_errors(manifest) == [], (manifest["kind"], manifest["metadata"]["name"])


def test_openapi_validation_catches_mistakes():
    deployment = render.render(installation()).get("Deployment", "anysentry-api")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"  # typo
    assert any("imagePulPolicy" in e for e in k8s_errors(broken))
    broken = copy.deepcopy(deployment)
    del broken["spec"]["selector"]
    assert any("selector" in e for e in k8s_errors(broken))
    broken = copy.deepcopy(deployment)
    broken["spec"]["replicas"] = "two"
    assert k8s_errors(broken)


def test_every_child_is_owned_by_the_installation_and_labelled():
    resource = installation(VARIANTS["example"])
    for manifest in render.render(resource).manifests:
        meta = manifest["metadata"]
        assert meta["namespace"] == "ns1"
        assert meta["ownerReferences"] == [{"apiVersion": "anysentry.io/v1alpha1", "kind": "AnySentry", "name": "anysentry",
                                            "uid": "0b7e-uid", "controller": True, "blockOwnerDeletion": True}]
        assert meta["labels"]["app.kubernetes.io/instance"] == "anysentry"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "anysentry-operator"


def test_api_rbac_is_least_privilege():
    rendered = render.render(installation())
    role = rendered.get("Role", "anysentry-api")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): r for r in role["rules"]}
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert "*" not in verbs
    resources = {res for rule in role["rules"] for res in rule["resources"]}
    assert "*" not in resources
    assert not any(r.endswith("/status") for r in resources), "the api never writes status"
    # delete and update only where REST replaces and deletes: notification routes
    for (groups, names), rule in rules.items():
        if names != ("notificationroutes",):
            assert "delete" not in rule["verbs"] and "update" not in rule["verbs"], rule
    # Secrets: create only (a REST route's receiver URL), never read, listed or changed
    assert rules[(("",), ("secrets",))]["verbs"] == ["create"]
    assert rules[(("",), ("configmaps",))] == {"apiGroups": [""], "resources": ["configmaps"],
                                              "resourceNames": ["anysentry-policy"], "verbs": ["get"]}
    assert rules[(("",), ("pods",))]["verbs"] == ["get", "list", "watch"]  # pod identity (SPEC §7.6)
    assert {r for (g, _), _ in rules.items() for r in g} == {"anysentry.io", ""}
    binding = rendered.get("RoleBinding", "anysentry-api")
    assert binding["roleRef"]["name"] == "anysentry-api"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "anysentry-api", "namespace": "ns1"}]
    assert not rendered.by_kind("ClusterRole") and not rendered.by_kind("ClusterRoleBinding")
    config = rendered.get("ConfigMap", "anysentry-config")["data"]
    assert config["ANYSENTRY_IDENTITY_NAMESPACES"] == "ns1"  # the pods its Role lets it read


def test_collector_is_an_observer_with_only_the_capabilities_it_needs():
    ds = render.render(installation(VARIANTS["example"])).get("DaemonSet", "anysentry-collector")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert "hostNetwork" not in pod and "hostIPC" not in pod
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE", "DAC_READ_SEARCH"]}
    assert container["readinessProbe"] and container["livenessProbe"]
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/host/proc"]["readOnly"] is True
    host_paths = [v for v in pod["volumes"] if "hostPath" in v]
    assert host_paths == [{"name": "host-proc", "hostPath": {"path": "/proc", "type": "Directory"}}]
    env = {e["name"]: e for e in container["env"]}
    assert env["ANYSENTRY_INGEST_URL"]["value"] == "http://anysentry-api.ns1.svc:29653/security-center"
    assert env["ANYSENTRY_SOURCE_ID"]["value"] == "src_ns1_anysentry-collector"
    token = next(v for v in pod["volumes"] if v["name"] == "ingest-token")
    assert token["secret"]["secretName"] == "anysentry-collector-ingest-token"


def test_api_probes_buffer_volume_and_writable_tmp():
    dep = render.render(installation(VARIANTS["example"])).get("Deployment", "anysentry-api")
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "emptyDir" in volumes[mounts[render.DATA_DIR]]  # lives with the Pod: survives container restarts
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    env = {e["name"]: e for e in container["env"]}
    assert env["ANYSENTRY_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "anysentry-admin", "key": "token"}
    assert env["A3S_SENTRY_LLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "anysentry-llm", "key": "apiKey"}
    assert env["CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "anysentry-clickhouse-credentials"
    assert pod["serviceAccountName"] == "anysentry-api"


def test_config_changes_roll_the_api_and_spec_changes_render_differently():
    before = render.render(installation({"retentionDays": 30}))
    after = render.render(installation({"retentionDays": 60}))
    hash_of = lambda r: r.get("Deployment", "anysentry-api")["spec"]["template"]["metadata"]["annotations"]["anysentry.io/config-hash"]  # noqa: E731
    assert hash_of(before) != hash_of(after)
    assert before.get("ConfigMap", "anysentry-config")["data"]["ANYSENTRY_RETENTION_DAYS"] == "30"
    assert hash_of(before) == hash_of(render.render(installation({"retentionDays": 30})))  # deterministic
    scaled = render.render(installation({"api": {"replicas": 5}}))
    assert scaled.get("Deployment", "anysentry-api")["spec"]["replicas"] == 5


def test_parts_switched_off_are_listed_as_absent():
    rendered = render.render(installation(VARIANTS["external"]))
    kinds = {(m["kind"], m["metadata"]["name"]) for m in rendered.manifests}
    assert ("DaemonSet", "anysentry-collector") not in kinds and ("Deployment", "anysentry-ui") not in kinds
    assert ("StatefulSet", "anysentry-clickhouse") not in kinds
    assert {("DaemonSet", "anysentry-collector"), ("Deployment", "anysentry-ui"),
            ("StatefulSet", "anysentry-clickhouse")} <= set(rendered.absent)
    config = rendered.get("ConfigMap", "anysentry-config")["data"]
    assert config["CLICKHOUSE_URL"] == "http://ch.db:8123" and config["CLICKHOUSE_DB"] == "sec"
    env = {e["name"]: e for e in rendered.get("Deployment", "anysentry-api")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CLICKHOUSE_USER"]["valueFrom"]["secretKeyRef"] == {"name": "ch-creds", "key": "username"}


def test_bundled_clickhouse_has_a_persistent_volume_claim():
    sts = render.render(installation(VARIANTS["example"])).get("StatefulSet", "anysentry-clickhouse")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert sts["spec"]["serviceName"] == "anysentry-clickhouse"


def test_other_children_are_valid_too():
    resource = installation()
    secret = render.clickhouse_credentials_secret(resource, render.owner_reference("AnySentry", "anysentry", "u"), "pw")
    token = render.token_secret("node-observer", "ns1", "uid-1", "ansrc_x", "2030-01-01T00:00:00Z")
    policy = render.policy_config_map("ns1", {"policy.json": "{}"})
    for manifest in (secret, token, policy):
        assert k8s_errors(manifest) == []
    assert token["metadata"]["ownerReferences"][0]["kind"] == "Source"
    assert token["metadata"]["name"] == "node-observer-ingest-token"


def test_long_names_are_shortened_to_valid_labels():
    name = "a" * 60
    for manifest in render.render(installation(name=name)).manifests:
        if manifest["kind"] in ("Service", "Deployment", "DaemonSet", "StatefulSet"):
            assert len(manifest["metadata"]["name"]) <= 63
        assert k8s_errors(manifest) == []
    assert render.child_name(name, "api") != render.child_name(name, "ui")
