"""A small, typed-by-convention Kubernetes REST layer over `kubernetes.client.ApiClient`.

The operator only needs a handful of verbs on a handful of kinds, and its objects are plain dicts
(rendered manifests, custom resources), so this speaks JSON straight to the API server: server-side
apply for children, merge patches for annotations and the status subresource, get/list/create/delete.
Every call is synchronous (kopf runs it in a thread: `asyncio.to_thread`). The same interface is
implemented in memory by the unit tests' fake, so handlers are tested without a cluster.

Errors are `KubeError(status, reason, message)`; 404 on get is `None`, not an error."""

from __future__ import annotations

import json
import threading
from typing import Any, Iterable
from urllib.parse import quote, urlencode

FIELD_MANAGER = "anysentry-operator"

# kind → (apiVersion, plural); anysentry.io kinds are added from the resource models
PLURALS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),
    "Service": ("v1", "services"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),
    "Event": ("v1", "events"),
    "Pod": ("v1", "pods"),
    "Namespace": ("v1", "namespaces"),
    "Deployment": ("apps/v1", "deployments"),
    "DaemonSet": ("apps/v1", "daemonsets"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "clusterroles"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "clusterrolebindings"),
    "Lease": ("coordination.k8s.io/v1", "leases"),
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def _register_custom_kinds() -> None:
    from anysentry.resources.models import API_VERSION, RESOURCES

    for resource in RESOURCES:
        PLURALS.setdefault(resource.KIND, (API_VERSION, resource.CRD.plural))


_register_custom_kinds()


class KubeError(Exception):
    def __init__(self, status: int, reason: str = "", message: str = ""):
        super().__init__(f"{status} {reason}: {message}".strip(": "))
        self.status = status
        self.reason = reason
        self.message = message


def path(kind: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
    api_version, plural = PLURALS[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace and kind not in CLUSTER_SCOPED:
        base += f"/namespaces/{quote(namespace, safe='')}"
    base += f"/{plural}"
    if name:
        base += f"/{quote(name, safe='')}"
    if subresource:
        base += f"/{subresource}"
    return base


class Kube:
    """JSON verbs on an `ApiClient` (`kubernetes.config.new_client_from_config()` or in-cluster)."""

    def __init__(self, api_client, *, timeout: float = 15.0):
        self.api = api_client
        self.timeout = timeout
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> "Kube":
        """In-cluster credentials when running in a Pod, else the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()
            return cls(client.ApiClient())
        except config.ConfigException:
            return cls(config.new_client_from_config(config_file=kubeconfig))

    def close(self) -> None:
        close = getattr(self.api, "close", None)
        if close:
            close()

    # ---- raw ---------------------------------------------------------------------------------
    def request(self, method: str, url: str, body: Any = None, *, query: dict | None = None,
                content_type: str = "application/json", timeout: float | None = None) -> Any:
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method_, full_url, headers, _, _ = self.api.param_serialize(
            method=method, resource_path=url, header_params=headers, auth_settings=["BearerToken"])
        data = None if body is None else (json.loads(body) if isinstance(body, str) else body)  # serialised once, by the client
        response = self.api.call_api(method_, full_url, header_params=headers, body=data,
                                     _request_timeout=timeout or self.timeout)
        raw = response.read()
        if response.status >= 400:
            message = ""
            reason = response.reason or ""
            try:
                status = json.loads(raw)
                message, reason = status.get("message", ""), status.get("reason", reason)
            except ValueError:
                message = (raw or b"").decode("utf-8", "replace")[:500]
            raise KubeError(response.status, reason, message)
        return json.loads(raw) if raw else None

    # ---- verbs -------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str | None, name: str, subresource: str | None = None) -> dict | None:
        try:
            return self.request("GET", path(kind, namespace, name, subresource))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict]:
        result = self.request("GET", path(kind, namespace),
                              query={"labelSelector": label_selector, "fieldSelector": field_selector})
        return list((result or {}).get("items") or [])

    def create(self, manifest: dict, namespace: str | None = None) -> dict:
        ns = namespace or manifest.get("metadata", {}).get("namespace")
        return self.request("POST", path(manifest["kind"], ns), manifest)

    def replace(self, manifest: dict) -> dict:
        meta = manifest["metadata"]
        return self.request("PUT", path(manifest["kind"], meta.get("namespace"), meta["name"]), manifest)

    def apply(self, manifest: dict, *, force: bool = True) -> dict:
        """Server-side apply (field manager `anysentry-operator`): creates or converges the object and
        changes nothing when it already matches."""
        meta = manifest["metadata"]
        return self.request("PATCH", path(manifest["kind"], meta.get("namespace"), meta["name"]), manifest,
                            query={"fieldManager": FIELD_MANAGER, "force": "true" if force else None},
                            content_type="application/apply-patch+yaml")

    def merge_patch(self, kind: str, namespace: str | None, name: str, patch: dict,
                    subresource: str | None = None) -> dict:
        return self.request("PATCH", path(kind, namespace, name, subresource), patch,
                            content_type="application/merge-patch+json")

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        try:
            self.request("DELETE", path(kind, namespace, name), {"propagationPolicy": "Background"})
            return True
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise

    def apply_all(self, manifests: Iterable[dict]) -> list[dict]:
        return [self.apply(m) for m in manifests]


class AsyncKube:
    """The same verbs, awaitable: each call runs in a worker thread, so a slow or restarting API
    server never blocks the event loop that kopf, the operations loops and the statuses share."""

    def __init__(self, kube):
        self.sync = kube

    def __getattr__(self, name: str):
        method = getattr(self.sync, name)
        if not callable(method):
            return method

        async def call(*args, **kwargs):
            import asyncio

            return await asyncio.to_thread(method, *args, **kwargs)

        call.__name__ = name
        return call


def plain(body) -> dict:
    """A kopf Body (or any mapping view) as plain JSON data."""
    return json.loads(json.dumps(body, default=dict))
