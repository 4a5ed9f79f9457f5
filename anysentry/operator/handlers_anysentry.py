"""`AnySentry`: render the installation (render.py), apply it, report its children, run its loops.

- create / update / resume: render, make the bundled store's credentials once, server-side apply
  every child (a spec change rolls out: Deployments and the DaemonSet roll their Pods), delete the
  children of parts switched off, point the installation's engine at its store, write status;
- the daemon (one per AnySentry, paused on standby peers) runs the operations loops (loops.py) and
  every few cycles re-applies the children, so a deleted or edited child converges back;
- status: conditions StorageReady, ApiAvailable, CollectorAvailable and Ready (True only when all
  three are), endpoints, Pods desired/ready, and a capped summary of open incidents and active
  alerts (counts and the most severe few);
- the api's Pod-reading RBAC outside the namespace (`render_rbac.identity_rbac`: Roles in other namespaces,
  or a ClusterRole) cannot be owned by the AnySentry, so it is found by its labels: what the spec no
  longer asks for is deleted on every reconcile, and all of it when the AnySentry is deleted (the
  daemon's finalizer already holds the deletion until the operator has seen it)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import urllib.request
from datetime import datetime

import kopf

from anysentry.operator import events
from anysentry.operator.kube import KubeError, plain
from anysentry.operator.loops import Installation, Runtime, configure_store, register_publisher, run_installation, runtime
from anysentry.operator.render import (
    clickhouse_credentials_secret,
    endpoints,
    names,
    owner_reference,
    render,
    storage_endpoint,
)
from anysentry.operator.render_rbac import IDENTITY_KINDS, identity_selector
from anysentry.operator.handlers_source import open_alerts
from anysentry.operator.status import awrite_status, from_ms, now_utc, with_conditions
from anysentry.resources.models import (
    GROUP,
    VERSION,
    AlertsSummary,
    AnySentry,
    AnySentryStatus,
    CollectorStatus,
    Endpoints,
    IncidentRef,
    IncidentsSummary,
    ReplicasStatus,
    StorageStatus,
)

log = logging.getLogger("anysentry.operator.anysentry")
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
REAPPLY_EVERY_CYCLES = 6


async def apply_installation(kube, resource: AnySentry, rt: Runtime) -> list[str]:
    """Apply every rendered child, delete the absent ones we own; returns what was applied."""
    meta = resource.metadata
    rendered = render(resource, rt.options)
    owner = owner_reference("AnySentry", meta.name, meta.uid)
    if resource.spec.storage.mode == "bundled":
        secret_name = names(meta.name)["clickhouse-credentials"]
        if await kube.get("Secret", meta.namespace, secret_name) is None:
            await kube.create(clickhouse_credentials_secret(resource, owner, secrets.token_urlsafe(24)), meta.namespace)
    applied, elsewhere = [], []
    for manifest in rendered.manifests:
        if manifest["metadata"].get("namespace") != meta.namespace:
            elsewhere.append(manifest)
            continue
        await kube.apply(manifest)
        applied.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
    for kind, name in rendered.absent:
        child = await kube.get(kind, meta.namespace, name)
        if child and any(ref.get("uid") == meta.uid for ref in (child.get("metadata") or {}).get("ownerReferences") or []):
            await kube.delete(kind, meta.namespace, name)
    applied += await apply_identity_rbac(kube, resource, elsewhere)
    return applied


async def apply_identity_rbac(kube, resource: AnySentry, manifests: list[dict]) -> list[str]:
    """Apply the pod-reading RBAC outside the namespace and delete the labelled pieces the spec no
    longer asks for. A refusal (the operator may not grant it, a namespace being deleted) becomes a
    Warning Event on the AnySentry and is tried again on the next reconcile; the rest of the
    installation is in place by then."""
    applied, failed = [], []
    for manifest in manifests:
        meta = manifest["metadata"]
        try:
            await kube.apply(manifest)
            applied.append(f"{manifest['kind']}/{meta.get('namespace') + '/' if meta.get('namespace') else ''}{meta['name']}")
        except KubeError as exc:
            failed.append(f"{manifest['kind']} {meta['name']} in {meta.get('namespace') or 'the cluster'}: {exc}")
    wanted = {(m["kind"], m["metadata"].get("namespace") or "", m["metadata"]["name"]) for m in manifests}
    removed = await remove_identity_rbac(kube, resource, keep=wanted, failed=failed)
    if failed:
        log.warning("pod identity RBAC of %s/%s: %s", resource.metadata.namespace, resource.name, "; ".join(failed))
        await events.aemit(kube, resource.to_k8s(), "IdentityAccessFailed",
                           "could not give the api read access to Pods: " + "; ".join(failed)[:900], events.WARNING)
    return applied + [f"-{item}" for item in removed]


async def remove_identity_rbac(kube, resource: AnySentry, *, keep: set = frozenset(), failed: list | None = None) -> list[str]:
    """Delete the installation's labelled pod-reading RBAC (all of it, or what is not in `keep`). A
    kind the operator may not list (e.g. ClusterRoles, rbac.clusterWidePodIdentity=false) is one it
    could not have made either: skipped, so it never holds up a reconcile or a deletion."""
    removed = []
    for kind in IDENTITY_KINDS:
        try:
            found = await kube.list(kind, None, label_selector=identity_selector(resource))
        except KubeError as exc:
            if exc.status != 403 and failed is not None:
                failed.append(f"listing {kind}: {exc}")
            continue
        for obj in found:
            meta = obj.get("metadata") or {}
            ns, name = meta.get("namespace") or "", meta.get("name", "")
            if (kind, ns, name) in keep:
                continue  # still wanted
            try:
                await kube.delete(kind, ns or None, name)
                removed.append(f"{kind}/{ns + '/' if ns else ''}{name}")
            except KubeError as exc:
                if failed is not None:
                    failed.append(f"deleting {kind} {name}: {exc}")
    return removed


async def store_settings_for(kube, resource: AnySentry):
    """The StoreSettings the installation's api uses (credentials from their Secret)."""
    from anysentry.store.settings import StoreSettings

    from anysentry.operator.handlers_notification import secret_value

    storage = resource.spec.storage
    mode, url = storage_endpoint(resource)
    user = password = ""
    if mode == "clickhouse":
        ref = storage.clickhouse.credentialsSecretRef
        database = storage.clickhouse.database
        if ref is not None:
            secret = await kube.get("Secret", resource.metadata.namespace, ref.name)
            user, password = secret_value(secret, ref.usernameKey) or "", secret_value(secret, ref.passwordKey) or ""
    else:
        database = "anysentry"
        secret = await kube.get("Secret", resource.metadata.namespace, names(resource.name)["clickhouse-credentials"])
        user, password = secret_value(secret, "username") or "", secret_value(secret, "password") or ""
    return StoreSettings(url=url, database=database, user=user, password=password,
                         retention_days=resource.spec.retentionDays, data_dir="/tmp/anysentry-operator")


def _ping(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=timeout) as response:  # noqa: S310 - http(s) only
            return response.status == 200
    except Exception:
        return False


def _replicas(workload: dict | None, desired: int) -> ReplicasStatus:
    status = (workload or {}).get("status") or {}
    ready = int(status.get("readyReplicas") or 0) if workload else 0
    desired = int(((workload or {}).get("spec") or {}).get("replicas", desired)) if workload else desired
    return ReplicasStatus(desiredReplicas=desired, readyReplicas=ready, ready=f"{ready}/{desired}")


def incidents_summary(engine) -> IncidentsSummary:
    book = getattr(engine, "incidents", None)
    if book is None:
        return IncidentsSummary()
    opened = [r for r in book.values() if r.get("status") == "open"]
    opened.sort(key=lambda r: (SEVERITY_ORDER.get(r.get("severity"), 5), -(r.get("lastSeenAt") or r.get("updatedAt") or 0)))
    refs = [IncidentRef(incidentId=r["incidentId"], severity=r.get("severity", "medium"),
                        title=r.get("title") or f"{r.get('riskName', 'incident')} · {r.get('agentId', '')}",
                        workspacePath=r.get("workspacePath", ""), agentId=r.get("agentId", ""),
                        openedAt=from_ms(r.get("firstSeenAt") or r.get("createdAt")))
            for r in opened[:5]]
    return IncidentsSummary(open=len(opened), critical=sum(1 for r in opened if r.get("severity") == "critical"),
                            high=sum(1 for r in opened if r.get("severity") == "high"), mostSevere=refs)


def alerts_summary(engine) -> AlertsSummary:
    alerts = open_alerts(engine)
    book = getattr(engine, "alerts", None)
    active = [a for a in (book.values() if book is not None else []) if a.get("status") in ("open", "acknowledged", "silenced")]
    return AlertsSummary(active=alerts.total, critical=sum(1 for a in active if a.get("severity") == "critical"),
                         high=sum(1 for a in active if a.get("severity") == "high"), mostSevere=alerts.items[:5])


def installation_status(obj: dict, resource: AnySentry, children: dict, storage_ready: bool, engine,
                        now: datetime) -> AnySentryStatus:
    """Conditions and figures from the children (`children` = {"api": Deployment, "ui": ..., "collector":
    DaemonSet, "clickhouse": StatefulSet}, None when absent)."""
    spec = resource.spec
    generation = int(resource.metadata.generation or 0)
    mode, url = storage_endpoint(resource)
    api = _replicas(children.get("api"), spec.api.replicas)
    ui = _replicas(children.get("ui"), spec.ui.replicas) if spec.ui.enabled else None
    ds = (children.get("collector") or {}).get("status") or {}
    collector = CollectorStatus(desiredNodes=int(ds.get("desiredNumberScheduled") or 0),
                                readyNodes=int(ds.get("numberReady") or 0),
                                ready=f"{int(ds.get('numberReady') or 0)}/{int(ds.get('desiredNumberScheduled') or 0)}")
    if mode == "bundled":
        sts = _replicas(children.get("clickhouse"), 1)
        storage_cond = ("StorageReady", "True" if storage_ready else "False", "Ready" if storage_ready else "NotReady",
                        f"bundled ClickHouse {sts.ready} ready")
    else:
        storage_cond = ("StorageReady", "True" if storage_ready else "False",
                        "Reachable" if storage_ready else "Unreachable",
                        f"ClickHouse at {url} {'answers' if storage_ready else 'does not answer'} /ping")
    api_ok = api.readyReplicas >= max(1, api.desiredReplicas) and children.get("api") is not None
    api_cond = ("ApiAvailable", "True" if api_ok else "False", "Available" if api_ok else "Unavailable",
                f"{api.ready} api Pods ready")
    if not spec.collector.enabled:
        collector_ok, collector_cond = True, ("CollectorAvailable", "True", "Disabled", "the collector is disabled")
    else:
        collector_ok = children.get("collector") is not None and collector.readyNodes >= collector.desiredNodes
        collector_cond = ("CollectorAvailable", "True" if collector_ok else "False",
                          "Available" if collector_ok else "Unavailable", f"collector ready on {collector.ready} nodes")
    ui_ok = ui is None or (children.get("ui") is not None and ui.readyReplicas >= ui.desiredReplicas)
    parts = [name for name, ok in (("storage", storage_ready), ("api", api_ok), ("collector", collector_ok), ("ui", ui_ok))
             if not ok]
    ready = ("Ready", "False" if parts else "True", "NotReady" if parts else "Ready",
             f"waiting for: {', '.join(parts)}" if parts else "every part is available")
    eps = endpoints(resource)
    return AnySentryStatus(
        observedGeneration=generation,
        conditions=with_conditions(obj, [storage_cond, api_cond, collector_cond, ready], generation, now),
        storage=StorageStatus(mode=mode, endpoint=url, ready=storage_ready),
        endpoints=Endpoints(**eps),
        api=api, ui=ui, collector=collector,
        incidents=incidents_summary(engine), alerts=alerts_summary(engine),
    )


async def read_children(kube, resource: AnySentry) -> dict:
    n, ns = names(resource.name), resource.metadata.namespace
    api, ui, ds, sts = await asyncio.gather(kube.get("Deployment", ns, n["api"]), kube.get("Deployment", ns, n["ui"]),
                                            kube.get("DaemonSet", ns, n["collector"]), kube.get("StatefulSet", ns, n["clickhouse"]))
    return {"api": api, "ui": ui, "collector": ds, "clickhouse": sts}


async def publish_installation(kube, rt: Runtime, obj: dict, *, now: datetime | None = None) -> AnySentryStatus:
    now = now or now_utc()
    resource = AnySentry.model_validate(obj)
    children = await read_children(kube, resource)
    mode, url = storage_endpoint(resource)
    if mode == "bundled":
        storage_ready = int(((children.get("clickhouse") or {}).get("status") or {}).get("readyReplicas") or 0) >= 1
    else:
        storage_ready = await asyncio.to_thread(_ping, url)
    inst = rt.installation(resource.metadata.namespace)
    status = installation_status(obj, resource, children, storage_ready, inst.engine, now)
    was_ready = next((c.get("status") for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), "")
    now_ready = next(c.status for c in status.conditions if c.type == "Ready")
    if now_ready == "True" and was_ready != "True":
        await events.aemit(kube, obj, "InstallationReady", "every part of the installation is available")
    elif now_ready == "False" and was_ready == "True":
        msg = next(c.message for c in status.conditions if c.type == "Ready")
        await events.aemit(kube, obj, "InstallationNotReady", msg, events.WARNING)
    await awrite_status(kube, "AnySentry", resource.metadata.namespace, resource.name, status)
    return status


async def reconcile_installation(kube, rt: Runtime, obj: dict) -> AnySentryStatus:
    resource = AnySentry.model_validate(obj)
    await apply_installation(kube, resource, rt)
    inst = rt.installation(resource.metadata.namespace)
    try:
        await configure_store(inst, await store_settings_for(kube, resource))
    except Exception as exc:
        log.warning("store of %s not configured: %s", resource.metadata.namespace, exc)
    return await publish_installation(kube, rt, obj)


@register_publisher
async def publish_installations(rt: Runtime, inst: Installation) -> None:
    for obj in await rt.kube.list("AnySentry", inst.namespace):
        if inst.cycles % REAPPLY_EVERY_CYCLES == REAPPLY_EVERY_CYCLES - 1:
            await reconcile_installation(rt.kube, rt, obj)
        else:
            await publish_installation(rt.kube, rt, obj)


# ---------------------------------------------------------------------------------------------
# kopf


@kopf.on.resume(GROUP, VERSION, "anysentries")
@kopf.on.create(GROUP, VERSION, "anysentries")
@kopf.on.update(GROUP, VERSION, "anysentries")
async def installation_changed(body, **_):
    rt = runtime()
    await reconcile_installation(rt.kube, rt, plain(body))


@kopf.on.delete(GROUP, VERSION, "anysentries", retries=6)
async def installation_deleted(body, **_):
    """What garbage collection cannot reach: the api's pod-reading RBAC outside the namespace (tried
    for about a minute, then logged and left, so a refusal never keeps the AnySentry from going)."""
    failed: list[str] = []
    await remove_identity_rbac(runtime().kube, AnySentry.model_validate(plain(body)), failed=failed)
    if failed:
        raise kopf.TemporaryError("; ".join(failed)[:900], delay=10)


@kopf.daemon(GROUP, VERSION, "anysentries", cancellation_timeout=10, initial_delay=1)
async def operations_loops(name, namespace, stopped, **_):
    await run_installation(runtime(), namespace, name, stopped)
