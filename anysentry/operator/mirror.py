"""REST management and the custom resources converge on one state in a cluster (SPEC §1, §22).

The api replicas run this when `ANYSENTRY_KUBE_NAMESPACE` is set (the operator renders it):

- REST → CR: a source created or changed through `POST /sources`, `PUT /sources/:id` or
  `POST /sources/:id/rotate-token` is written as a `Source` resource (`write_source`): spec from the
  record; annotations `anysentry.io/source-id` (when the id is not the one the name implies) and the
  token's hash, preview and issue time with `anysentry.io/token-issuer: api` (the token itself went
  to the REST caller and is nowhere else). `write_objective`, `write_window` and `write_policy` do
  the same for objectives, maintenance windows and the policy (`PUT /config` writes Policy
  `default`).
- Objectives and maintenance windows created through REST take their resource's id from the start:
  the route asks `claim_id` first, which picks a free resource name and answers
  `resource_id("obj"|"mw", namespace, name)`; the record is created under it and written (in the
  background, `publish`) as that resource with no id annotation, so REST, every replica and the
  operator hold one record. A resource an older version wrote for a record with a generated id
  keeps that id in `anysentry.io/objectiveid` / `anysentry.io/windowid`, and everyone reads it the
  same way (`ops.objectives.resource_record_id`). The REST name of an objective and the labels of a
  window ride in annotations (`anysentry.io/display-name`, `anysentry.io/labels`), so the resource
  coming back does not rename or relabel the record.
- CR → api: `SourceMirror.run()` watches the namespace's `Source`, `Objective`,
  `MaintenanceWindow` and `NotificationRoute` resources and applies each onto the replica's registry
  and books (the same ids the operator uses), so a `kubectl apply` appears in `/sources/list` within
  a watch event.
- Notification routes both ways (with their Secrets) are `mirror_routes.RouteMirror`, reached as
  `services.mirror.routes` by the notification routes' REST handlers. Receiver channels hold URLs
  and keys that live in Secrets: a replica never stores them and never sends to those channels; it
  queues such deliveries for the operator, which reads the Secrets (`ops.notification_secrets`).

Wiring (in `anysentry api`, done by the lead):

    from anysentry.operator import mirror
    mirror.attach(services)   # no-op outside a cluster

which appends `SourceMirror.on_source_change` to `services.sources.change_listeners`, marks the
replica's notifier as one that leaves Secret-sourced channels to the operator, and starts the watch
from a startup hook. Writes made while applying a watched object are not written back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import threading
from datetime import datetime, timezone
from typing import Any

from anysentry.operator.handlers_source import HASH, ISSUED, ISSUER, PREVIEW, SOURCE_ID, source_id_of, upsert_source
from anysentry.operator.kube import Kube, KubeError
from anysentry.operator.mirror_routes import RouteMirror, receiver_channel
from anysentry.operator.names import DNS_NAME, candidate_names, resource_name, unchecked_name
from anysentry.operator.status import from_ms, rfc3339
from anysentry.ops.maintenance import LABELS_ANNOTATION
from anysentry.ops.objectives import API_MANAGER, DISPLAY_NAME, ID_ANNOTATIONS, MANAGED_BY, resource_id, resource_record_id
from anysentry.ops.standalone import resource_source_id
from anysentry.resources.models import API_VERSION, GROUP, VERSION

log = logging.getLogger("anysentry.mirror")

SOURCE_TYPES = ("observer", "forwarder", "webhook", "otel", "custom", "falco", "tetragon")
WATCHED = {"Source": "sources", "Objective": "objectives", "MaintenanceWindow": "maintenancewindows",
           "NotificationRoute": "notificationroutes"}
# kind → (id field, id prefix, the REST field that names it, the name when that is empty)
RECORDS = {"Objective": ("objectiveId", "obj", "name", "objective"),
           "MaintenanceWindow": ("windowId", "mw", "title", "maintenance")}


# ---------------------------------------------------------------------------------------------
# names


def _suffix(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:6]


def _apply(kube, manifest: dict) -> dict:
    meta = manifest["metadata"]
    from anysentry.operator.kube import path

    return kube.request("PATCH", path(manifest["kind"], meta["namespace"], meta["name"]), manifest,
                        query={"fieldManager": API_MANAGER, "force": "true"},
                        content_type="application/apply-patch+yaml")


def _find_by_annotation(kube, kind: str, namespace: str, key: str, value: str) -> dict | None:
    for obj in kube.list(kind, namespace):
        if ((obj.get("metadata") or {}).get("annotations") or {}).get(key) == value:
            return obj
    return None


# ---------------------------------------------------------------------------------------------
# REST → CR


def source_spec(record: dict) -> dict:
    """The Source spec of a registry record (within the CRD's bounds)."""
    tags = []
    for tag in record.get("tags") or []:
        tag = str(tag).strip()[:64]
        if tag and tag not in tags:
            tags.append(tag)
    spec: dict[str, Any] = {
        "type": record.get("type") if record.get("type") in SOURCE_TYPES else "custom",
        "enabled": bool(record.get("enabled", True)),
        "requireToken": bool(record.get("requireToken", False)),
    }
    if record.get("tokenRotationDays") is not None:
        spec["tokenRotationDays"] = max(0, min(3650, int(record["tokenRotationDays"])))
    for key, limit in (("collectorId", 253), ("workspacePath", 1024), ("owner", 120), ("team", 120),
                       ("environment", 64), ("note", 2000)):
        value = str(record.get(key) or "")[:limit]
        if value:
            spec[key] = value
    if tags:
        spec["tags"] = tags[:32]
    return spec


def source_cr_name(kube, namespace: str, record: dict) -> tuple[str, dict | None]:
    """(name, existing object) of the Source resource that holds `record`."""
    sid = record["sourceId"]
    existing = _find_by_annotation(kube, "Source", namespace, SOURCE_ID, sid)
    if existing is not None:
        return existing["metadata"]["name"], existing
    prefix = resource_source_id(namespace, "")
    if sid.startswith(prefix) and sid[len(prefix):]:
        name = sid[len(prefix):]
        if DNS_NAME.fullmatch(name):
            return name, kube.get("Source", namespace, name)
    name = resource_name(record.get("name", ""), sid)
    taken = kube.get("Source", namespace, name)
    if taken is not None and source_id_of(taken) != sid:
        name = f"{name[:56]}-{_suffix(sid)}"
        taken = kube.get("Source", namespace, name)
    return name, taken


def write_source(kube, namespace: str, record: dict, *, token_issued: bool = False) -> dict:
    """Create or update the Source resource of a REST-managed source record (registry record, with
    `tokenHash`). `token_issued`: the REST call issued a token (create, rotate-token)."""
    name, existing = source_cr_name(kube, namespace, record)
    annotations: dict[str, str] = {}
    if record["sourceId"] != resource_source_id(namespace, name):
        annotations[SOURCE_ID] = record["sourceId"]
    if token_issued and record.get("tokenHash"):
        annotations.update({HASH: record["tokenHash"], PREVIEW: record.get("tokenPreview", ""),
                            ISSUED: rfc3339(from_ms(record.get("tokenIssuedAt"))) or "", ISSUER: "api"})
    manifest = {"apiVersion": API_VERSION, "kind": "Source",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {MANAGED_BY: API_MANAGER}},
                "spec": source_spec(record)}
    if annotations:
        manifest["metadata"]["annotations"] = annotations
    return _apply(kube, manifest)


def write_objective(kube, namespace: str, record: dict) -> dict:
    """An objective record (SPEC §18) as an `Objective` resource."""
    name = _name_for(kube, "Objective", namespace, record)
    target = {"type": record.get("targetType") or "global"}
    if target["type"] != "global" and record.get("targetId"):
        target["id"] = record["targetId"]
    spec: dict[str, Any] = {"target": target, "metric": record.get("metric") or "coverage_score",
                            "severity": record.get("severity") or "high", "enabled": bool(record.get("enabled", True))}
    for key in ("comparator", "threshold"):
        if record.get(key) is not None and record.get(key) != "":
            spec[key] = record[key]
    for key, limit in (("owner", 120), ("description", 1000)):
        if record.get(key):
            spec[key] = str(record[key])[:limit]
    extra = {DISPLAY_NAME: record["name"]} if record.get("name") and record["name"] != name else {}
    return _apply(kube, _custom("Objective", namespace, name, spec, record, extra))


def _ms_time(value: Any) -> str | None:
    """Epoch ms as RFC 3339 with milliseconds, so the window read back from the resource starts and
    ends where the record does."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    moment = datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_window(kube, namespace: str, record: dict) -> dict:
    """A maintenance window record (SPEC §19) as a `MaintenanceWindow` resource."""
    name = _name_for(kube, "MaintenanceWindow", namespace, record)
    target = {"type": record.get("targetType") or "all"}
    if target["type"] != "all" and record.get("targetId"):
        target["id"] = record["targetId"]
    spec: dict[str, Any] = {"target": target, "startAt": _ms_time(record.get("startAt")),
                            "endAt": _ms_time(record.get("endAt")), "enabled": bool(record.get("enabled", True))}
    for key, limit in (("title", 200), ("reason", 500), ("owner", 120), ("note", 2000)):
        if record.get(key):
            spec[key] = str(record[key])[:limit]
    extra = {LABELS_ANNOTATION: json.dumps(record["labels"], sort_keys=True)} if record.get("labels") else {}
    return _apply(kube, _custom("MaintenanceWindow", namespace, name, spec, record, extra))


def write_policy(kube, namespace: str, policy: dict, name: str = "default") -> dict:
    """`PUT /config` in a cluster: the policy as Policy `name`. Rules owned by other Policies of the
    namespace (the merged view GET /config shows) are left out, so they are not duplicated."""
    from anysentry.judge.policy import sanitize_policy

    clean = sanitize_policy(policy)
    config_map = kube.get("ConfigMap", namespace, os.environ.get("ANYSENTRY_POLICY_CONFIGMAP", "anysentry-policy"))
    foreign = set()
    for key, value in ((config_map or {}).get("data") or {}).items():
        if key.startswith("policy.") and key.endswith(".json") and key not in ("policy.json", f"policy.{name}.json"):
            try:
                foreign |= {r["name"] for r in json.loads(value).get("rules", [])}
            except (ValueError, AttributeError, KeyError):
                continue
    rules = []
    for rule in clean["rules"]:
        if rule["name"] in foreign:
            continue
        item = {"name": resource_rule_name(rule["name"]), "on": rule["on"], "match": rule["match"],
                "verdict": rule["verdict"], "severity": rule["severity"], "reason": rule["reason"][:200]}
        if rule.get("action"):
            item["action"] = rule["action"]
        rules.append(item)
    spec = {"mode": clean["mode"], "failClosed": clean["failClosed"], "rules": rules}
    if clean["disabledBuiltins"]:
        spec["disabledBuiltins"] = clean["disabledBuiltins"]
    manifest = {"apiVersion": API_VERSION, "kind": "Policy",
                "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED_BY: API_MANAGER}},
                "spec": spec}
    return _apply(kube, manifest)


def resource_rule_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._:/-]+", "-", name).strip("-._:/")[:80]
    return name or "rule"


def _name_for(kube, kind: str, namespace: str, record: dict) -> str:
    """The resource that holds `record`: the one its id names (claimed by `claim_id`, or kubectl's),
    else one whose id annotation holds it (an older version's write), else a new name."""
    id_field, prefix, text_field, fallback = RECORDS[kind]
    rid = record[id_field]
    implied = resource_id(prefix, namespace, "")
    if rid.startswith(implied) and DNS_NAME.fullmatch(rid[len(implied):]):
        return rid[len(implied):]
    existing = _find_by_annotation(kube, kind, namespace, ID_ANNOTATIONS[prefix], rid)
    if existing is not None:
        return existing["metadata"]["name"]
    name = resource_name(record.get(text_field) or "", fallback)
    if kube.get(kind, namespace, name) is not None:
        name = f"{name[:56]}-{_suffix(rid)}"
    return name


def _custom(kind: str, namespace: str, name: str, spec: dict, record: dict, extra: dict[str, str]) -> dict:
    id_field, prefix, _, _ = RECORDS[kind]
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {MANAGED_BY: API_MANAGER}}
    annotations = dict(extra)
    if record[id_field] != resource_id(prefix, namespace, name):
        annotations[ID_ANNOTATIONS[prefix]] = record[id_field]
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


# ---------------------------------------------------------------------------------------------
# CR → api


def read_sources(kube, namespace: str, registry) -> list[dict]:
    """Every Source resource of `namespace` into `registry` (SourceRegistry.upsert, same ids as the
    operator: `anysentry.io/source-id` or `resource_source_id(namespace, name)`)."""
    records = []
    for obj in kube.list("Source", namespace):
        record = upsert_source(registry, obj)
        if record is not None:
            records.append(record)
    return records


class SourceMirror:
    """Keeps one api replica's registry and books in step with the namespace's resources, and writes
    REST changes back as resources."""

    def __init__(self, services, kube, namespace: str, *, watch_timeout: int = 30):
        self.services = services
        self.kube = kube
        self.namespace = namespace
        self.watch_timeout = watch_timeout
        self._applying = threading.local()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Task] = set()
        self.routes = RouteMirror(services, kube, namespace)
        self._claimed: dict[str, set[str]] = {kind: set() for kind in RECORDS}  # names given out, not yet written
        self.applied = 0
        self.errors = 0

    # ---- REST → CR ---------------------------------------------------------------------------
    def on_source_change(self, record: dict) -> None:
        """`SourceRegistry.change_listeners` hook: schedule the write of the changed record."""
        if getattr(self._applying, "active", False):
            return
        issued = record.get("tokenIssuedAt") == record.get("updatedAt") and bool(record.get("tokenHash"))
        snapshot = dict(record)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self._write_source(snapshot, issued)
            return
        task = loop.create_task(asyncio.to_thread(self._write_source, snapshot, issued))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _write_source(self, record: dict, issued: bool) -> None:
        if record.get("discovered"):
            return  # auto-discovered producers stay api-local until someone manages them
        try:
            write_source(self.kube, self.namespace, record, token_issued=issued)
        except Exception as exc:
            self.errors += 1
            log.warning("source %s not written as a Source resource: %s", record.get("sourceId"), exc)

    async def claim_id(self, kind: str, body: dict, book) -> str:
        """The id a REST create of an Objective / MaintenanceWindow records under: `resource_id` of a
        resource name picked now from the body's name or title (free in the API server, in `book` and
        among the names this replica gave out and has not written yet). A body naming a record the
        book holds keeps it (create is idempotent there)."""
        id_field, prefix, text_field, fallback = RECORDS[kind]
        given = body.get(id_field)
        if isinstance(given, str) and given.strip() and book.get(given.strip()[:160]) is not None:
            return given.strip()[:160]
        text = body.get(text_field) if isinstance(body.get(text_field), str) else ""
        base = resource_name(text, fallback)
        claimed = self._claimed[kind]
        for name in candidate_names(base):
            try:
                free = await asyncio.to_thread(self.kube.get, kind, self.namespace, name) is None
            except Exception as exc:  # API server away: a name nobody holds, written when it is back
                log.warning("%s name not checked with the API server: %s", kind, exc)
                name, free = unchecked_name(base), True
            # checked after the wait: a concurrent create on this replica may have taken it meanwhile
            if free and name not in claimed and book.get(resource_id(prefix, self.namespace, name)) is None:
                claimed.add(name)
                return resource_id(prefix, self.namespace, name)
        name = unchecked_name(base)
        claimed.add(name)
        return resource_id(prefix, self.namespace, name)

    def publish(self, kind: str, record: dict) -> None:
        """REST-created objectives and maintenance windows become resources (written in the background)."""
        writer = {"Objective": write_objective, "MaintenanceWindow": write_window}[kind]
        snapshot = dict(record)
        id_field, prefix, _, _ = RECORDS[kind]
        implied = resource_id(prefix, self.namespace, "")
        claimed = snapshot[id_field][len(implied):] if snapshot[id_field].startswith(implied) else ""

        def write() -> None:
            try:
                writer(self.kube, self.namespace, snapshot)
            except Exception as exc:
                self.errors += 1
                log.warning("%s not written as a resource: %s", kind, exc)

        task = asyncio.get_running_loop().create_task(asyncio.to_thread(write))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        task.add_done_callback(lambda _: self._claimed[kind].discard(claimed))  # the resource holds the name now

    async def write_policy(self, policy: dict) -> dict:
        """`PUT /config` in a cluster writes the Policy resource; the operator validates it and every
        replica picks it up from the published ConfigMap."""
        return await asyncio.to_thread(write_policy, self.kube, self.namespace, policy)

    async def flush(self) -> None:
        """Wait for the writes scheduled so far (tests, shutdown)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # ---- CR → api ----------------------------------------------------------------------------
    def apply(self, kind: str, event_type: str, obj: dict) -> None:
        """One watched object onto the replica (runs on the event loop)."""
        self._applying.active = True
        try:
            if kind == "Source":
                registry = self.services.sources
                if event_type == "DELETED":
                    registry.remove(source_id_of(obj))
                else:
                    upsert_source(registry, obj)
            elif kind == "NotificationRoute":
                self.routes.hold(event_type, obj)
            else:
                from anysentry.resources.models import KINDS

                area = {"Objective": "objectives", "MaintenanceWindow": "maintenance"}[kind]
                book = getattr(self.services.ops, area, None)
                if book is None:
                    return
                if event_type == "DELETED":
                    book.remove(resource_record_id(RECORDS[kind][1], obj["metadata"]))
                else:
                    book.apply_resource(KINDS[kind].model_validate(obj))
            self.applied += 1
        except Exception as exc:
            self.errors += 1
            log.warning("%s %s not applied: %s", kind, (obj.get("metadata") or {}).get("name"), exc)
        finally:
            self._applying.active = False

    def _watch_thread(self, kind: str, stop: threading.Event) -> None:
        """Blocking watch of one kind (re-listed on every restart of the stream), events handed to the loop."""
        from kubernetes import client, watch

        api = client.CustomObjectsApi(self.kube.api)
        plural = WATCHED[kind]
        failures = 0
        while not stop.is_set():
            try:
                stream = watch.Watch().stream(api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, plural,
                                              timeout_seconds=self.watch_timeout, _request_timeout=self.watch_timeout + 10)
                for event in stream:
                    if stop.is_set():
                        return
                    obj = event.get("object")
                    if isinstance(obj, dict) and event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        self._loop.call_soon_threadsafe(self.apply, kind, event["type"], obj)  # type: ignore[union-attr]
                failures = 0
            except Exception as exc:  # API server restarting, RBAC, network: back off and re-list
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("watch of %s in %s failed (%d): %s", plural, self.namespace, failures, exc)
                stop.wait(min(10.0, 0.5 * failures))

    async def run(self) -> None:
        """Watch every mirrored kind until cancelled."""
        self._loop = asyncio.get_running_loop()
        stop = threading.Event()
        threads = [threading.Thread(target=self._watch_thread, args=(kind, stop), daemon=True, name=f"mirror-{kind}")
                   for kind in WATCHED]
        for thread in threads:
            thread.start()
        try:
            await asyncio.Event().wait()
        finally:
            stop.set()

    async def initial_sync(self) -> None:
        """Read everything once (before serving), so the first request sees the resources."""
        for kind, plural in WATCHED.items():
            try:
                items = await asyncio.to_thread(self.kube.list, kind, self.namespace)
            except (KubeError, OSError, Exception) as exc:
                log.warning("initial read of %s failed: %s", plural, exc)
                continue
            for obj in items:
                self.apply(kind, "ADDED", obj)


def attach(services, namespace: str | None = None, kube=None) -> SourceMirror | None:
    """Mirror REST management onto the namespace's resources when running in a cluster."""
    namespace = namespace or os.environ.get("ANYSENTRY_KUBE_NAMESPACE", "")
    if not namespace:
        return None
    kube = kube or Kube.from_environment()
    mirror = SourceMirror(services, kube, namespace)
    services.sources.change_listeners.append(mirror.on_source_change)
    notifier = getattr(getattr(services, "ops", None), "notifications", None)
    if notifier is not None:  # receivers' URLs and keys live in Secrets: never stored, delivered by the operator
        notifier.holds_secrets = False
        notifier.secret_channel = lambda cid: receiver_channel(namespace, cid) is not None

    async def start(_services) -> None:
        await mirror.initial_sync()
        _services.spawn(mirror.run(), "resource-mirror")

    async def stop(_services) -> None:
        await mirror.flush()

    services.startup_hooks.append(start)
    services.shutdown_hooks.append(stop)
    services.mirror = mirror
    return mirror
