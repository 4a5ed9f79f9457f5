"""The api's RBAC, rendered from an `AnySentry` (pure functions, applied by `handlers_anysentry`).

- `api_rbac`: ServiceAccount `<n>-api` + Role + RoleBinding in the installation's namespace, owned by
  the AnySentry: the anysentry.io resources REST management mirrors, the policy ConfigMap, and Pods when
  that namespace is one it watches.
- `identity_rbac`: read access to Pods for the pod identity of events (SPEC §7.6,
  `spec.identity.namespaces`) in the other listed namespaces (Role + RoleBinding
  `anysentry:<ns>:<n>-api:pods` in each) or everywhere (ClusterRole + ClusterRoleBinding for `*`).
  An owner reference never crosses namespaces, so these carry the installation's labels
  (`identity_selector`) and the handler deletes them when the list changes or the AnySentry goes.

Split from `render` (which still renders both as part of an installation);
the metadata primitives (names, labels, `_meta`, `service_account`) stay there."""

from __future__ import annotations

from anysentry.operator.render import (
    API_MANAGED_PLURALS,
    POLICY_CONFIGMAP,
    _meta,
    identity_namespaces,
    labels,
    names,
    service_account,
)
from anysentry.resources.models import GROUP, AnySentry

IDENTITY_COMPONENT = "pod-identity"
INSTALLATION_NAMESPACE_LABEL = "anysentry.io/installation-namespace"
IDENTITY_KINDS = ("RoleBinding", "Role", "ClusterRoleBinding", "ClusterRole")  # bindings go first


def api_rbac(resource: AnySentry, owner: dict | None) -> list[dict]:
    """Least privilege for the api: the anysentry.io resources REST management reads and writes
    (never their status; delete and update only on notificationroutes, which REST replaces and
    deletes) and the policy ConfigMap it follows. Secrets: `create` only, for the receivers' webhook
    URLs of REST-written routes (content-named, never read or changed; the operator removes unused
    ones). Pods: read, for the pod identity of events (§7.6), when this namespace is one it watches
    (`identity_rbac` covers the others). The admin token, ClickHouse credentials and model keys reach
    it as environment."""
    meta, n = resource.metadata, names(resource.name)
    name, ns = n["api"], meta.namespace
    watched = identity_namespaces(resource)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": _meta(name, ns, meta.name, "api", owner),
        "rules": [
            {"apiGroups": [GROUP], "resources": [p for p in API_MANAGED_PLURALS if p != "notificationroutes"],
             "verbs": ["get", "list", "watch", "create", "patch"]},
            {"apiGroups": [GROUP], "resources": ["notificationroutes"],
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [POLICY_CONFIGMAP], "verbs": ["get"]},
            *([_pod_reader()] if watched is not None and ns in watched else []),
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": _meta(name, ns, meta.name, "api", owner),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
    }
    return [service_account(name, ns, meta.name, "api", owner, automount=True), role, binding]


def identity_labels(resource: AnySentry) -> dict[str, str]:
    """What marks the pod-reading RBAC of an installation outside its namespace as its own."""
    return labels(resource.name, IDENTITY_COMPONENT) | {INSTALLATION_NAMESPACE_LABEL: resource.metadata.namespace}


def identity_selector(resource: AnySentry) -> str:
    return ",".join(f"{key}={value}" for key, value in identity_labels(resource).items())


def identity_rbac(resource: AnySentry) -> list[dict]:
    """Read access to Pods for the api's ServiceAccount beyond its own namespace: a Role + RoleBinding
    in each other listed namespace, or one ClusterRole + ClusterRoleBinding for `*`. No owner
    reference (it cannot cross namespaces): labelled instead (`identity_selector`)."""
    meta, api = resource.metadata, names(resource.name)["api"]
    watched = identity_namespaces(resource)
    name, rbac = f"anysentry:{meta.namespace}:{api}:pods", "rbac.authorization.k8s.io"
    role, binding = ("ClusterRole", "ClusterRoleBinding") if watched is None else ("Role", "RoleBinding")
    out: list[dict] = []
    for ns in [None] if watched is None else [ns for ns in watched if ns != meta.namespace]:
        where = {"name": name, **({"namespace": ns} if ns else {})}
        out += [{"apiVersion": f"{rbac}/v1", "kind": role, "metadata": {**where, "labels": identity_labels(resource)},
                 "rules": [_pod_reader()]},
                {"apiVersion": f"{rbac}/v1", "kind": binding, "metadata": {**where, "labels": identity_labels(resource)},
                 "roleRef": {"apiGroup": rbac, "kind": role, "name": name},
                 "subjects": [{"kind": "ServiceAccount", "name": api, "namespace": meta.namespace}]}]
    return out


def _pod_reader() -> dict:
    return {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
