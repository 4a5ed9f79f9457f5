"""What an `AnySentry` becomes in the cluster: pure functions from the resource to manifests.

`render(resource, options)` returns every child the installation needs, each with an owner reference
to the AnySentry (so deleting it garbage-collects them), plus the (kind, name) pairs of children that
must be absent (a part switched off). Nothing here talks to the API server; `handlers_anysentry`
applies the result with server-side apply, so an unchanged spec changes nothing.

Children of AnySentry `<n>` in its namespace:
- ServiceAccount `<n>-api` + Role + RoleBinding: get/list/watch/create/patch on the anysentry.io
  resources (REST management mirrors them) and get on the policy ConfigMap; nothing else.
- Read access to Pods for their identity (SPEC §7.6, `spec.identity.namespaces`): in the api Role
  when its own namespace is watched, a Role + RoleBinding `anysentry:<ns>:<n>-api:pods` in each
  other listed namespace, or a ClusterRole + ClusterRoleBinding of that name for `*`. These cannot be
  owned by the AnySentry (an owner reference never crosses namespaces), so they carry its labels
  (`identity_selector`) and `handlers_anysentry` deletes them when the list changes or it goes.
  Both RBAC parts are rendered in `render_rbac` (which builds on this module's names and labels).
- ConfigMap `<n>-config`: the api's environment (SPEC §31); its hash rolls the Pods on change.
- Deployment + Service `<n>-api`: `anysentry api`, readiness `/readyz`, liveness `/healthz`, the
  durable buffer (WAL) on an emptyDir at /var/lib/anysentry (it survives container restarts, DESIGN
  §2), a writable /tmp (chdb / clickhouse-connect temp files), read-only root, non-root.
- ServiceAccount `<n>-collector` (no token) + DaemonSet `<n>-collector`: observe-only, hostPID, host
  /proc read-only, root without privilege escalation, only SYS_PTRACE and DAC_READ_SEARCH, never
  privileged; its ingest token comes from the Secret of Source `<n>-collector` (also rendered).
- Deployment + Service `<n>-ui` when the UI is enabled.
- StatefulSet + headless Service `<n>-clickhouse` (volumeClaimTemplate `data`) when the bundled store
  is in use; its credentials Secret is made once by the handler (`clickhouse_credentials_secret`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from anysentry.resources.models import API_VERSION, AnySentry, SecretKeyRef
from anysentry.ops.standalone import resource_source_id

API_PORT = 29653
UI_PORT = 5006
COLLECTOR_HEALTH_PORT = 29654
CLICKHOUSE_HTTP_PORT = 8123
CLICKHOUSE_NATIVE_PORT = 9000
POLICY_CONFIGMAP = "anysentry-policy"
DATA_DIR = "/var/lib/anysentry"
TOKEN_KEY = "token"
MANAGED_BY = "anysentry-operator"
CUSTOM_PLURALS = ("anysentries", "sources", "policies", "objectives", "maintenancewindows", "notificationroutes")
API_MANAGED_PLURALS = ("sources", "policies", "objectives", "maintenancewindows", "notificationroutes")
DEFAULT_CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:24.8"
DEFAULT_API_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
DEFAULT_COLLECTOR_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
DEFAULT_UI_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
DEFAULT_CLICKHOUSE_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
COLLECTOR_CAPABILITIES = ("SYS_PTRACE", "DAC_READ_SEARCH")  # read every process's /proc entries; nothing more
NON_ROOT_UID = 10001


def default_image() -> str:
    """The operator's own image (env ANYSENTRY_IMAGE, set by the Helm chart), else a versioned default."""
    try:
        from importlib.metadata import version
        tag = version("anysentry")
    except Exception:  # pragma: no cover - not installed
        tag = "latest"
    return os.environ.get("ANYSENTRY_IMAGE") or f"anysentry/anysentry:{tag}"


@dataclass(frozen=True)
class RenderOptions:
    image: str = field(default_factory=default_image)
    clickhouse_image: str = DEFAULT_CLICKHOUSE_IMAGE
    image_pull_policy: str = "IfNotPresent"
    buffer_size_limit: str = "1Gi"  # emptyDir sizeLimit of the api's durable buffer
    tmp_size_limit: str = "1Gi"


@dataclass
class Rendered:
    manifests: list[dict]
    absent: list[tuple[str, str]]  # (kind, name) of children that must not exist

    def by_kind(self, kind: str) -> list[dict]:
        return [m for m in self.manifests if m["kind"] == kind]

    def get(self, kind: str, name: str) -> dict | None:
        return next((m for m in self.manifests if m["kind"] == kind and m["metadata"]["name"] == name), None)


# ---------------------------------------------------------------------------------------------
# names and metadata


def child_name(owner: str, suffix: str, limit: int = 63) -> str:
    """`<owner>-<suffix>`, shortened with a hash when it would exceed `limit` (DNS label rules)."""
    name = f"{owner}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{owner[: limit - len(suffix) - 10].rstrip('-.')}-{digest}-{suffix}"


def names(owner: str) -> dict[str, str]:
    return {part: child_name(owner, part) for part in ("api", "collector", "ui", "clickhouse", "config")} | {
        "clickhouse-credentials": child_name(owner, "clickhouse-credentials", 253)}


def labels(instance: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "anysentry",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "anysentry",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(instance: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "anysentry", "app.kubernetes.io/instance": instance,
            "app.kubernetes.io/component": component}


def owner_reference(kind: str, name: str, uid: str, api_version: str = API_VERSION) -> dict:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": True}


def _meta(name: str, namespace: str, instance: str, component: str, owner: dict | None, **extra) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels(instance, component)}
    if owner:
        meta["ownerReferences"] = [owner]
    meta.update(extra)
    return meta


def _quantities(resources: dict) -> dict:
    out: dict[str, dict[str, str]] = {}
    for key in ("requests", "limits"):
        values = resources.get(key) or {}
        if values:
            out[key] = {name: str(value) for name, value in values.items()}
    return out


def _resources(spec_resources, default: dict) -> dict:
    given = _quantities(spec_resources.model_dump(mode="json")) if spec_resources is not None else {}
    return given or json.loads(json.dumps(default))


def config_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _secret_env(name: str, ref: SecretKeyRef | None, key: str | None = None, optional: bool = False) -> dict | None:
    if ref is None:
        return None
    selector_ = {"name": ref.name, "key": key or ref.key}
    if optional:
        selector_["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": selector_}}


def _restricted_container_security() -> dict:
    return {"runAsNonRoot": True, "runAsUser": NON_ROOT_UID, "runAsGroup": NON_ROOT_UID,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False,
            "capabilities": {"drop": ["ALL"]}}


def _pod_security(fs_group: int | None = NON_ROOT_UID) -> dict:
    out: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if fs_group is not None:
        out["fsGroup"] = fs_group
    return out


# ---------------------------------------------------------------------------------------------
# the installation


def storage_endpoint(resource: AnySentry) -> tuple[str, str]:
    """(mode, URL) of the store the api writes to."""
    spec = resource.spec
    if spec.storage.mode == "clickhouse":
        return "clickhouse", spec.storage.clickhouse.url
    n = names(resource.name)
    return "bundled", f"http://{n['clickhouse']}.{resource.metadata.namespace}.svc:{CLICKHOUSE_HTTP_PORT}"


def endpoints(resource: AnySentry) -> dict[str, str]:
    n, ns = names(resource.name), resource.metadata.namespace
    api = f"http://{n['api']}.{ns}.svc:{API_PORT}/security-center"
    out = {"api": api, "ingest": f"{api}/ingest"}
    if resource.spec.ui.enabled:
        out["ui"] = f"http://{n['ui']}.{ns}.svc:{UI_PORT}{ui_base_path(resource)}/"
    return out


def ui_base_path(resource: AnySentry) -> str:
    """The UI's public base path without its trailing slash ("" at the root), SPEC §3.1."""
    return resource.spec.ui.publicBasePath.rstrip("/")


def api_environment(resource: AnySentry) -> dict[str, str]:
    """The api's non-secret settings (ConfigMap `<n>-config`)."""
    spec, ns = resource.spec, resource.metadata.namespace
    mode, url = storage_endpoint(resource)
    env = {
        "PORT": str(API_PORT),
        "CLICKHOUSE_URL": url,
        "CLICKHOUSE_DB": spec.storage.clickhouse.database if mode == "clickhouse" else "anysentry",
        "ANYSENTRY_DATA_DIR": DATA_DIR,
        "ANYSENTRY_RETENTION_DAYS": str(spec.retentionDays),
        "ANYSENTRY_KUBE_NAMESPACE": ns,
        "ANYSENTRY_POLICY_CONFIGMAP": POLICY_CONFIGMAP,
        "ANYSENTRY_CLUSTER_ID": os.environ.get("ANYSENTRY_CLUSTER_ID", "default-cluster"),
        # pod identity at ingest (SPEC §7.6): exactly the namespaces where its RBAC lets it read Pods
        "ANYSENTRY_IDENTITY_NAMESPACES": ",".join(identity_namespaces(resource) or ("*",)),
        "ANYSENTRY_JUDGE_FAIL_CLOSED": "true" if spec.judge.failClosed else "false",
        "TMPDIR": "/tmp",
    }
    if spec.judge.llm is not None:
        env.update({"A3S_SENTRY_LLM_URL": spec.judge.llm.url, "A3S_SENTRY_LLM_MODEL": spec.judge.llm.model,
                    "A3S_SENTRY_LLM_TIMEOUT_S": str(spec.judge.llm.timeoutS)})
    if spec.judge.deepInvestigation is not None:
        env.update({"A3S_SENTRY_L3_URL": spec.judge.deepInvestigation.url,
                    "A3S_SENTRY_L3_TIMEOUT_S": str(spec.judge.deepInvestigation.timeoutS)})
    return env


def _clickhouse_credential_env(resource: AnySentry) -> list[dict]:
    storage = resource.spec.storage
    if storage.mode == "clickhouse":
        creds = storage.clickhouse.credentialsSecretRef
        if creds is None:
            return []
        return [{"name": "CLICKHOUSE_USER", "valueFrom": {"secretKeyRef": {"name": creds.name, "key": creds.usernameKey}}},
                {"name": "CLICKHOUSE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": creds.name, "key": creds.passwordKey}}}]
    secret = names(resource.name)["clickhouse-credentials"]
    return [{"name": "CLICKHOUSE_USER", "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}},
            {"name": "CLICKHOUSE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}]


def render(resource: AnySentry, options: RenderOptions | None = None) -> Rendered:
    """Every child of the installation (owner references set), and the children that must be absent."""
    from anysentry.operator.render_rbac import api_rbac, identity_rbac  # builds on this module
    options = options or RenderOptions()
    meta = resource.metadata
    if not meta.name or not meta.namespace:
        raise ValueError("an AnySentry to render needs metadata.name and metadata.namespace")
    owner = owner_reference("AnySentry", meta.name, meta.uid) if meta.uid else None
    spec = resource.spec
    n = names(meta.name)
    manifests: list[dict] = []
    absent: list[tuple[str, str]] = []

    manifests += api_rbac(resource, owner)
    config = config_map(resource, owner)
    manifests.append(config)
    manifests.append(api_service(resource, owner))
    manifests.append(api_deployment(resource, owner, options, config_hash(config["data"], spec.api.model_dump(mode="json"))))

    if spec.collector.enabled:
        manifests.append(service_account(n["collector"], meta.namespace, meta.name, "collector", owner, automount=False))
        manifests.append(collector_source(resource, owner))
        manifests.append(collector_daemonset(resource, owner, options))
    else:
        absent += [("DaemonSet", n["collector"]), ("Source", n["collector"]), ("ServiceAccount", n["collector"])]

    if spec.ui.enabled:
        manifests.append(ui_service(resource, owner))
        manifests.append(ui_deployment(resource, owner, options))
    else:
        absent += [("Deployment", n["ui"]), ("Service", n["ui"])]

    if spec.storage.mode == "bundled":
        manifests.append(clickhouse_service(resource, owner))
        manifests.append(clickhouse_statefulset(resource, owner, options))
    else:
        absent += [("StatefulSet", n["clickhouse"]), ("Service", n["clickhouse"])]
    manifests += identity_rbac(resource)  # last: outside the namespace, applied after everything else
    return Rendered(manifests, absent)


def service_account(name: str, namespace: str, instance: str, component: str, owner: dict | None, *,
                    automount: bool) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _meta(name, namespace, instance, component, owner),
            "automountServiceAccountToken": automount}


def identity_namespaces(resource: AnySentry) -> tuple[str, ...] | None:
    """The namespaces whose Pods the api reads (SPEC §7.6); None for every namespace."""
    return resource.spec.identity.effective(resource.metadata.namespace)


def config_map(resource: AnySentry, owner: dict | None) -> dict:
    meta = resource.metadata
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(names(meta.name)["config"], meta.namespace, meta.name, "api", owner),
            "data": api_environment(resource)}


def api_service(resource: AnySentry, owner: dict | None) -> dict:
    meta = resource.metadata
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(names(meta.name)["api"], meta.namespace, meta.name, "api", owner),
            "spec": {"type": "ClusterIP", "selector": selector(meta.name, "api"),
                     "ports": [{"name": "http", "port": API_PORT, "targetPort": "http", "protocol": "TCP"}]}}


def _volumes_tmp(options: RenderOptions) -> tuple[list[dict], list[dict]]:
    return ([{"name": "tmp", "emptyDir": {"sizeLimit": options.tmp_size_limit}}],
            [{"name": "tmp", "mountPath": "/tmp"}])


def api_deployment(resource: AnySentry, owner: dict | None, options: RenderOptions, checksum: str) -> dict:
    meta, spec, n = resource.metadata, resource.spec, names(resource.name)
    env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    env += _clickhouse_credential_env(resource)
    for item in (_secret_env("ANYSENTRY_ADMIN_TOKEN", spec.api.adminTokenSecretRef),
                 _secret_env("A3S_SENTRY_LLM_API_KEY", spec.judge.llm.apiKeySecretRef if spec.judge.llm else None)):
        if item:
            env.append(item)
    tmp_volumes, tmp_mounts = _volumes_tmp(options)
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3,
             "failureThreshold": 6}
    container = {
        "name": "api",
        "image": spec.api.image or options.image,
        "imagePullPolicy": options.image_pull_policy,
        "args": ["api", "--port", str(API_PORT)],
        "ports": [{"name": "http", "containerPort": API_PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": n["config"]}}],
        "env": env,
        "resources": _resources(spec.api.resources, DEFAULT_API_RESOURCES),
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3,
                           "failureThreshold": 3},
        "livenessProbe": probe,
        "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 60},
        "securityContext": _restricted_container_security(),
        "volumeMounts": [{"name": "buffer", "mountPath": DATA_DIR}, *tmp_mounts],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(n["api"], meta.namespace, meta.name, "api", owner),
        "spec": {
            "replicas": spec.api.replicas,
            "selector": {"matchLabels": selector(meta.name, "api")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(meta.name, "api"), "annotations": {"anysentry.io/config-hash": checksum}},
                "spec": {
                    "serviceAccountName": n["api"],
                    "automountServiceAccountToken": True,
                    "securityContext": _pod_security(),
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    # the durable buffer lives with the Pod: a container restart (crash, OOM, liveness)
                    # finds every acknowledged-but-unstored event where it left it (DESIGN §2)
                    "volumes": [{"name": "buffer", "emptyDir": {"sizeLimit": options.buffer_size_limit}}, *tmp_volumes],
                },
            },
        },
    }


def collector_source(resource: AnySentry, owner: dict | None) -> dict:
    """The collector's own Source: the operator issues its ingest token into `<n>-collector-ingest-token`."""
    meta = resource.metadata
    name = names(meta.name)["collector"]
    return {"apiVersion": API_VERSION, "kind": "Source",
            "metadata": _meta(name, meta.namespace, meta.name, "collector", owner),
            "spec": {"type": "observer", "requireToken": True, "note": f"Node collector of AnySentry {meta.name}."}}


def token_secret_name(source_name: str) -> str:
    return child_name(source_name, "ingest-token", 253)


def collector_daemonset(resource: AnySentry, owner: dict | None, options: RenderOptions) -> dict:
    meta, spec, n = resource.metadata, resource.spec, names(resource.name)
    collector = spec.collector
    api = endpoints(resource)["api"]
    env = [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "ANYSENTRY_INGEST_URL", "value": api},
        {"name": "ANYSENTRY_SOURCE_ID", "value": resource_source_id(meta.namespace, n["collector"])},
        {"name": "ANYSENTRY_SOURCE_TYPE", "value": "observer"},
        {"name": "ANYSENTRY_INGEST_TOKEN_FILE", "value": "/var/run/anysentry/ingest/token"},
        {"name": "ANYSENTRY_COLLECTOR_MODE", "value": collector.mode},
        {"name": "ANYSENTRY_HOST_PROC", "value": "/host/proc"},
        {"name": "ANYSENTRY_COLLECTOR_HEALTH_PORT", "value": str(COLLECTOR_HEALTH_PORT)},
    ]
    probe = {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 15, "timeoutSeconds": 3,
             "failureThreshold": 4}
    container = {
        "name": "collector",
        "image": collector.image or options.image,
        "imagePullPolicy": options.image_pull_policy,
        "args": ["collect", "--mode", collector.mode],
        "ports": [{"name": "health", "containerPort": COLLECTOR_HEALTH_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(collector.resources, DEFAULT_COLLECTOR_RESOURCES),
        "readinessProbe": {**probe, "periodSeconds": 10},
        "livenessProbe": probe,
        # root (to read other users' /proc/<pid>), but no privilege, no escalation, a read-only root
        # file system and exactly the two capabilities a procfs observer needs
        "securityContext": {"privileged": False, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsUser": 0, "runAsNonRoot": False,
                            "capabilities": {"drop": ["ALL"], "add": list(COLLECTOR_CAPABILITIES)}},
        "volumeMounts": [
            {"name": "host-proc", "mountPath": "/host/proc", "readOnly": True},
            {"name": "ingest-token", "mountPath": "/var/run/anysentry/ingest", "readOnly": True},
            {"name": "buffer", "mountPath": "/var/lib/anysentry"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": n["collector"],
        "automountServiceAccountToken": False,
        "hostPID": True,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": [
            {"name": "host-proc", "hostPath": {"path": "/proc", "type": "Directory"}},
            {"name": "ingest-token", "secret": {"secretName": token_secret_name(n["collector"]), "optional": True,
                                                "items": [{"key": TOKEN_KEY, "path": "token"}]}},
            {"name": "buffer", "emptyDir": {"sizeLimit": "512Mi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }
    if collector.nodeSelector:
        pod_spec["nodeSelector"] = dict(collector.nodeSelector)
    if collector.tolerations:
        pod_spec["tolerations"] = [t.to_k8s() for t in collector.tolerations]
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": _meta(n["collector"], meta.namespace, meta.name, "collector", owner),
        "spec": {
            "selector": {"matchLabels": selector(meta.name, "collector")},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {"metadata": {"labels": labels(meta.name, "collector")}, "spec": pod_spec},
        },
    }


def ui_service(resource: AnySentry, owner: dict | None) -> dict:
    meta = resource.metadata
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(names(meta.name)["ui"], meta.namespace, meta.name, "ui", owner),
            "spec": {"type": "ClusterIP", "selector": selector(meta.name, "ui"),
                     "ports": [{"name": "http", "port": UI_PORT, "targetPort": "http", "protocol": "TCP"}]}}


def ui_deployment(resource: AnySentry, owner: dict | None, options: RenderOptions) -> dict:
    meta, spec, n = resource.metadata, resource.spec, names(resource.name)
    tmp_volumes, tmp_mounts = _volumes_tmp(options)
    probe = {"tcpSocket": {"port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 6}
    env = [{"name": "HOME", "value": "/tmp"}]
    if ui_base_path(resource):  # behind an ingress at a sub-path: served (pages and assets) under it
        env.append({"name": "PUBLIC_BASE_PATH", "value": ui_base_path(resource)})
    # the UI acts (acknowledge, resolve, simulate) through the API's management routes: same token
    admin_token = _secret_env("ANYSENTRY_ADMIN_TOKEN", spec.api.adminTokenSecretRef)
    if admin_token:
        env.append(admin_token)
    container = {
        "name": "ui",
        "image": spec.api.image or options.image,
        "imagePullPolicy": options.image_pull_policy,
        "args": ["ui", "--host", "0.0.0.0", "--port", str(UI_PORT), "--api-url", endpoints(resource)["api"]],
        "ports": [{"name": "http", "containerPort": UI_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": json.loads(json.dumps(DEFAULT_UI_RESOURCES)),
        "readinessProbe": probe,
        "livenessProbe": probe,
        "securityContext": _restricted_container_security(),
        "volumeMounts": tmp_mounts,
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(n["ui"], meta.namespace, meta.name, "ui", owner),
        "spec": {
            "replicas": spec.ui.replicas,
            "selector": {"matchLabels": selector(meta.name, "ui")},
            "template": {
                "metadata": {"labels": labels(meta.name, "ui")},
                "spec": {"automountServiceAccountToken": False, "securityContext": _pod_security(),
                         "containers": [container], "volumes": tmp_volumes},
            },
        },
    }


def clickhouse_service(resource: AnySentry, owner: dict | None) -> dict:
    meta = resource.metadata
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(names(meta.name)["clickhouse"], meta.namespace, meta.name, "clickhouse", owner),
            "spec": {"clusterIP": "None", "selector": selector(meta.name, "clickhouse"),
                     "ports": [{"name": "http", "port": CLICKHOUSE_HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                               {"name": "native", "port": CLICKHOUSE_NATIVE_PORT, "targetPort": "native", "protocol": "TCP"}]}}


def clickhouse_statefulset(resource: AnySentry, owner: dict | None, options: RenderOptions) -> dict:
    """One ClickHouse node on a PersistentVolumeClaim (kept when the AnySentry goes: data is not
    deleted with the installation; remove the PVC by hand)."""
    meta, n = resource.metadata, names(resource.name)
    bundled = resource.spec.storage.effectiveBundled
    secret = n["clickhouse-credentials"]
    pvc_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": str(bundled.storageSize)}}}
    if bundled.storageClassName:
        pvc_spec["storageClassName"] = bundled.storageClassName
    container = {
        "name": "clickhouse",
        "image": bundled.image or options.clickhouse_image,
        "imagePullPolicy": options.image_pull_policy,
        "ports": [{"name": "http", "containerPort": CLICKHOUSE_HTTP_PORT, "protocol": "TCP"},
                  {"name": "native", "containerPort": CLICKHOUSE_NATIVE_PORT, "protocol": "TCP"}],
        "env": [{"name": "CLICKHOUSE_DB", "value": "anysentry"},
                {"name": "CLICKHOUSE_USER", "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}},
                {"name": "CLICKHOUSE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}},
                {"name": "CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT", "value": "0"}],
        "resources": json.loads(json.dumps(DEFAULT_CLICKHOUSE_RESOURCES)),
        "readinessProbe": {"httpGet": {"path": "/ping", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3},
        "livenessProbe": {"httpGet": {"path": "/ping", "port": "http"}, "periodSeconds": 15, "timeoutSeconds": 5,
                          "failureThreshold": 6, "initialDelaySeconds": 30},
        "securityContext": {"allowPrivilegeEscalation": False, "privileged": False,
                            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "SETUID", "SETGID", "DAC_OVERRIDE",
                                                                       "FOWNER"]}},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/clickhouse"}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": _meta(n["clickhouse"], meta.namespace, meta.name, "clickhouse", owner),
        "spec": {
            "serviceName": n["clickhouse"],
            "replicas": 1,
            "selector": {"matchLabels": selector(meta.name, "clickhouse")},
            "template": {
                "metadata": {"labels": labels(meta.name, "clickhouse")},
                "spec": {"automountServiceAccountToken": False,
                         "securityContext": {"fsGroup": 101, "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [container]},
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": labels(meta.name, "clickhouse")},
                                      "spec": pvc_spec}],
        },
    }


def clickhouse_credentials_secret(resource: AnySentry, owner: dict | None, password: str) -> dict:
    meta = resource.metadata
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _meta(names(meta.name)["clickhouse-credentials"], meta.namespace, meta.name, "clickhouse", owner),
            "stringData": {"username": "anysentry", "password": password}}


# ---------------------------------------------------------------------------------------------
# other children


def token_secret(source_name: str, namespace: str, owner_uid: str, token: str, issued_at: str) -> dict:
    """The ingest token of a Source, in a Secret the Source owns (the token is nowhere else)."""
    owner = owner_reference("Source", source_name, owner_uid) if owner_uid else None
    meta = {"name": token_secret_name(source_name), "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "anysentry", "app.kubernetes.io/managed-by": MANAGED_BY,
                       "anysentry.io/source": _label_value(source_name)},
            "annotations": {"anysentry.io/token-issued-at": issued_at}}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta, "stringData": {TOKEN_KEY: token}}


def policy_config_map(namespace: str, data: dict[str, str]) -> dict:
    """The active policy of a namespace, which every api replica there polls (policy_sync)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": POLICY_CONFIGMAP, "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "anysentry", "app.kubernetes.io/component": "policy",
                                    "app.kubernetes.io/managed-by": MANAGED_BY}},
            "data": data}


def _label_value(value: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63]
    return value.strip("-_.") or "x"
