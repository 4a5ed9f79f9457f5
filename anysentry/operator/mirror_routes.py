"""Notification routes in a cluster: REST and `kubectl` hold one state (SPEC §1, §17).

A REST route names channels, each holding a webhook URL and maybe an HMAC key; a `NotificationRoute`
resource names Secrets. So the api writes a REST route as a resource whose receivers are its
channels, and copies each receiver's URL and key into a NEW Secret named by a hash of its content
(`<route>-webhook-<hash8>`), owned by the resource (deleting the route collects them) and labelled
as the api's. The api may create Secrets but never read or change them (its Role holds `create`
only): a changed URL is a new Secret and a repointed `secretKeyRef`; the operator deletes the api's
Secrets that no route references any more.

A channel created or changed through REST keeps its URL and key in a Secret too
(`anysentry-channel-<hash12>`, `RouteMirror.channel_secret`), labelled as a channel's (never selected
by that pruning, no owner); a route naming such a channel on a replica that does not hold its values
references that Secret directly. The operator reads it (`handlers_notification.hold_channel_secrets`).

Ids are the resource's everywhere (`rou_<ns>_<name>`, receiver channels `chn_<ns>_<name>_<receiver>`),
so an api replica holds the same records the operator builds from the same resource, and a REST
route's `channelIds` become its receivers' channels once written. The channel a receiver was copied
from is kept in the annotation `anysentry.io/receiver-channels`, so a new URL on that channel
(`PUT /notifications/channels/:id`) repoints the receiver too.

Where deliveries run: in a cluster the operator folds the stored events into incidents and alerts
and runs the timers, so it sends nearly every notification, to receiver channels with the URLs and
keys it reads from the Secrets (held in memory; the store gets those channels without them,
`ops.notification_secrets`). The alert changes the requests an api replica serves (acknowledge,
resolve, check-ins) notify too, but a replica never sends to a receiver channel, not even with a URL
just given to it through REST: `mirror.attach` marks those channels as Secret-sourced, so it queues
such a delivery in the store as a hidden `queued` row, and the operator's cycle sends it and records
the outcome under the same id (`handlers_notification.deliver_handed_over`). A replica sends itself
only to a channel that holds an inline URL (the env channel, `ANYSENTRY_ALERT_WEBHOOK_URL`, when no
route matches). The api never reads a Secret."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass, field

from anysentry.operator.kube import KubeError
from anysentry.ops.notification_secrets import from_secret, kube_secret_refs
from anysentry.ops.notifications import ENV_CHANNEL_ID, SECRET_FIELDS, NotificationError, Notifier
from anysentry.ops.objectives import API_MANAGER, MANAGED_BY, resource_id
from anysentry.operator.names import DNS_NAME, candidate_names, resource_name, unchecked_name
from anysentry.ops.standalone import REF_FIELDS, channel_id, forget_channels, route_differs, route_id, route_record
from anysentry.resources.models import API_VERSION, NotificationRoute

log = logging.getLogger("anysentry.mirror.routes")

ROUTE_LABEL = "anysentry.io/notification-route"
SOURCE_CHANNELS = "anysentry.io/receiver-channels"
SECRET_SALT = "anysentry.io/secret-salt"
URL_KEY = "webhookUrl"
HMAC_KEY = "hmacKey"
MAX_RECEIVERS = 10
CHANNEL_LABEL = "anysentry.io/notification-channel"  # a REST channel's Secret (never ROUTE_LABEL)
CHANNEL_ANNOTATION = "anysentry.io/channel-id"
CHANNEL_KEYS = {"webhookUrl": URL_KEY, "signingKey": HMAC_KEY}
LIMITS = {"webhookUrl": 2048, "signingKey": 512}  # what the notifier keeps of each
ACTOR = {"type": "system", "id": "anysentry-api"}
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# REST route field → (RouteMatch field, the CRD's length limit)
MATCH_FIELDS = (("workspacePath", "workspace", 1024), ("agentId", "agent", 256), ("collectorId", "collector", 253),
                ("sourceId", "source", 128), ("owner", "owner", 120), ("team", "team", 120), ("q", "text", 200))


class RouteNotWritable(NotificationError):
    """A REST route that cannot become a NotificationRoute (the message says why)."""


# ---------------------------------------------------------------------------------------------
# names


def resource_name_of(namespace: str, rid: str) -> str | None:
    """The NotificationRoute a route id stands for, or None for an id no resource implies."""
    prefix = resource_id("rou", namespace, "")
    name = rid[len(prefix):] if rid.startswith(prefix) else ""
    return name if name and DNS_NAME.fullmatch(name) and resource_id("rou", namespace, name) == rid else None


def receiver_of(namespace: str, route: str, cid: str) -> str | None:
    """The receiver of NotificationRoute `route` whose channel is `cid`, if it is one."""
    prefix = channel_id({"metadata": {"namespace": namespace, "name": route}}, "")
    name = cid[len(prefix):] if cid.startswith(prefix) else ""
    return name if name and _LABEL.match(name) and len(name) <= 63 else None


def receiver_channel(namespace: str, cid: str) -> tuple[str, str] | None:
    """(route, receiver) when `cid` is a receiver channel of some NotificationRoute."""
    prefix = resource_id("chn", namespace, "")
    route, _, receiver = cid[len(prefix):].partition("_") if cid.startswith(prefix) else ("", "", "")
    return (route, receiver) if route and DNS_NAME.fullmatch(route) and receiver_of(namespace, route, cid) == receiver else None


def dns_name(text: str, fallback: str, limit: int = 50) -> str:
    """A DNS label from a display name (no dots), `fallback` when nothing is left."""
    return resource_name(text, fallback, limit, dots=False)


def receiver_name(text: str, taken: set[str]) -> str:
    """A receiver name (DNS label) from a channel's name, unique among `taken`."""
    base = dns_name(text, "webhook", 40)
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def secret_name(route: str, salt: str, url: str, key: str) -> str:
    """`<route>-webhook-<hash8>`: the same content (for one incarnation of the route) names the same
    Secret, a new URL or key a new one. Salted per resource: a recreated route never meets the
    Secrets of its predecessor, which the garbage collector is still removing."""
    digest = hashlib.sha256(json.dumps([salt, url, key]).encode()).hexdigest()[:8]
    return f"{route[:236].rstrip('-.')}-webhook-{digest}"


def label_value(route: str) -> str:
    """A route name as a label value (≤ 63 characters)."""
    if len(route) <= 63:
        return route
    return f"{route[:54].rstrip('-.')}-{hashlib.sha256(route.encode()).hexdigest()[:8]}"



# ---------------------------------------------------------------------------------------------
# REST record ↔ resource


def route_spec(record: dict, receivers: list[dict]) -> dict:
    """The NotificationRoute spec of a REST route record (within the CRD's bounds)."""
    match: dict = {}
    if record.get("minSeverity"):
        match["minSeverity"] = record["minSeverity"]
    if record.get("kinds"):
        match["kinds"] = list(record["kinds"])
    for rest_key, key, limit in MATCH_FIELDS:
        if record.get(rest_key):
            match[key] = str(record[rest_key])[:limit]
    spec = {"match": match, "receivers": receivers, "enabled": bool(record.get("enabled", True))}
    if record.get("description"):
        spec["description"] = str(record["description"])[:1000]
    return spec


def route_body(obj: dict) -> dict:
    """The REST route record a NotificationRoute stands for, its channels the route's receivers."""
    spec = NotificationRoute.model_validate(obj).spec
    return route_record(obj, [channel_id(obj, r.name) for r in spec.receivers])


def receiver_channel_body(obj: dict, receiver: str, enabled: bool) -> dict:
    return {"channelId": channel_id(obj, receiver), "name": f"{obj['metadata']['name']}/{receiver}", "enabled": enabled}


@dataclass
class ReceiverPlan:
    receivers: list[dict] = field(default_factory=list)  # spec.receivers, Secret names still to fill in
    sources: dict[str, str] = field(default_factory=dict)  # receiver → the channel it was copied from
    given: dict[str, tuple[str, str]] = field(default_factory=dict)  # receiver → (url, key) for a new Secret


def plan_receivers(namespace: str, route: str, channel_ids: list[str], channels: dict[str, dict],
                   old_receivers: dict[str, dict], old_sources: dict[str, str],
                   fresh: dict[str, tuple[str, str]] | None = None) -> ReceiverPlan:
    """Receivers of `route` for a REST record's `channel_ids`.

    The route's own receiver channels keep their Secret references (set by kubectl or an earlier
    write) unless `fresh` gives that receiver a new URL/key; any other channel becomes a receiver
    whose URL and key (from `channels`, the api's channel records) go into a new Secret."""
    fresh = fresh or {}
    plan = ReceiverPlan()
    own = {cid: receiver_of(namespace, route, cid) for cid in channel_ids}
    taken = {name for name in own.values() if name}
    by_source = {cid: name for name, cid in old_sources.items()}
    for cid in channel_ids:
        name = own[cid]
        if name is not None:
            if name in plan.given or any(r["name"] == name for r in plan.receivers):
                continue
            if name in fresh:
                plan.given[name] = fresh[name]
            elif name in old_receivers:
                plan.receivers.append(old_receivers[name])
                if name in old_sources:
                    plan.sources[name] = old_sources[name]
                continue
            elif (channels.get(cid) or {}).get("webhookUrl"):
                plan.given[name] = (channels[cid]["webhookUrl"], channels[cid].get("signingKey") or "")
            else:
                continue
        else:
            channel = channels.get(cid) or {}
            refs = kube_secret_refs(channel)
            if not channel.get("webhookUrl") and "webhookUrl" not in refs:
                continue
            name = by_source.get(cid) if by_source.get(cid) not in taken else None
            name = name or receiver_name(channel.get("name") or cid, taken)
            plan.sources[name] = cid
            if not fresh.get(name) and not channel.get("webhookUrl"):  # a REST channel's own Secret, not held here
                taken.add(name)
                plan.receivers.append({"name": name, **{ref_field: refs[f] for f, ref_field in REF_FIELDS if f in refs}})
                continue
            plan.given[name] = fresh.get(name) or (channel["webhookUrl"], channel.get("signingKey") or "")
        taken.add(name)
        plan.receivers.append({"name": name})
    return plan


def channel_secret_name(cid: str, values: dict[str, str]) -> str:
    """`anysentry-channel-<hash12>`: named by the channel and its content, so a retried write meets its own."""
    digest = hashlib.sha256(json.dumps([cid, sorted(values.items())]).encode()).hexdigest()[:12]
    return f"anysentry-channel-{digest}"


def channel_secret_manifest(namespace: str, name: str, cid: str, values: dict[str, str]) -> dict:
    """A REST channel's Secret: immutable, labelled as the api's channel Secret (no route owns it, and
    the operator's pruning of unreferenced route Secrets never selects it)."""
    data = {CHANNEL_KEYS[f]: base64.b64encode(v.encode()).decode() for f, v in values.items()}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True, "data": data,
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {MANAGED_BY: API_MANAGER, CHANNEL_LABEL: label_value(dns_name(cid, "channel", 63))},
                         "annotations": {CHANNEL_ANNOTATION: cid}}}


def receiver_refs(receiver: str, secret: str, key: str) -> dict:
    out = {"name": receiver, "webhookUrlSecretRef": {"name": secret, "key": URL_KEY}}
    if key:
        out["hmacKeySecretRef"] = {"name": secret, "key": HMAC_KEY}
    return out


def secret_manifest(owner: dict, name: str, url: str, key: str) -> dict:
    """A receiver's Secret: immutable, labelled as the api's, owned by the NotificationRoute."""
    meta = owner["metadata"]
    data = {URL_KEY: base64.b64encode(url.encode()).decode()}
    if key:
        data[HMAC_KEY] = base64.b64encode(key.encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True, "data": data,
            "metadata": {"name": name, "namespace": meta["namespace"],
                         "labels": {MANAGED_BY: API_MANAGER, ROUTE_LABEL: label_value(meta["name"])},
                         "ownerReferences": [{"apiVersion": API_VERSION, "kind": "NotificationRoute",
                                              "name": meta["name"], "uid": meta["uid"], "controller": True}]}}


def _sources(annotations: dict) -> dict[str, str]:
    try:
        value = json.loads(annotations.get(SOURCE_CHANNELS) or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


# ---------------------------------------------------------------------------------------------
# writes (blocking: run in a thread)


def write_route(kube, namespace: str, name: str, record: dict, channels: dict[str, dict],
                fresh: dict[str, tuple[str, str]] | None = None) -> tuple[dict, dict[str, tuple[str, str]]]:
    """Create or replace NotificationRoute `name` from a REST route record; returns the resource and
    the (url, key) of each receiver given a new Secret. A new resource is created first (its Secrets
    need its uid); an existing one gets its new Secrets before it is repointed to them."""
    for _ in range(3):
        existing = kube.get("NotificationRoute", namespace, name)
        meta = dict((existing or {}).get("metadata") or {})
        annotations = dict(meta.get("annotations") or {})
        old = {r["name"]: r for r in ((existing or {}).get("spec") or {}).get("receivers") or []}
        plan = plan_receivers(namespace, name, list(record.get("channelIds") or []), channels, old,
                              _sources(annotations), fresh)
        if not plan.receivers:
            raise RouteNotWritable("no channel of the route has a webhook URL")
        salt = annotations.get(SECRET_SALT) or secrets.token_hex(8)
        receivers = [r if r["name"] not in plan.given else
                     receiver_refs(r["name"], secret_name(name, salt, *plan.given[r["name"]]), plan.given[r["name"]][1])
                     for r in plan.receivers]
        annotations[SECRET_SALT] = salt
        if plan.sources:
            annotations[SOURCE_CHANNELS] = json.dumps(plan.sources, sort_keys=True)
        else:
            annotations.pop(SOURCE_CHANNELS, None)
        manifest = {"apiVersion": API_VERSION, "kind": "NotificationRoute", "spec": route_spec(record, receivers),
                    "metadata": {**meta, "name": name, "namespace": namespace, "annotations": annotations}}
        if existing is None:
            manifest["metadata"]["labels"] = {MANAGED_BY: API_MANAGER}
        try:
            NotificationRoute.model_validate(manifest)
        except ValueError as exc:
            raise RouteNotWritable(f"not a valid NotificationRoute: {exc}") from exc
        try:
            if existing is None:
                obj = kube.create(manifest)
                _create_secrets(kube, obj, plan, salt)
                return obj, plan.given
            _create_secrets(kube, existing, plan, salt)
            return kube.replace(manifest), plan.given
        except KubeError as exc:
            if exc.status != 409:  # 409: created or changed meanwhile; read it again
                raise
    raise KubeError(409, "Conflict", f"NotificationRoute {name} kept changing while it was written")


def _create_secrets(kube, owner: dict, plan: ReceiverPlan, salt: str) -> None:
    for url, key in plan.given.values():
        try:
            kube.create(secret_manifest(owner, secret_name(owner["metadata"]["name"], salt, url, key), url, key))
        except KubeError as exc:
            if exc.status != 409:  # the same content already has its Secret
                raise


def claim_name(kube, namespace: str, text: str, taken_ids) -> str:
    """A NotificationRoute name from a display name that neither a resource nor a route holds yet."""
    base = dns_name(text, "route")
    for name in candidate_names(base):
        if kube.get("NotificationRoute", namespace, name) is None and resource_id("rou", namespace, name) not in taken_ids:
            return name
    return unchecked_name(base)


# ---------------------------------------------------------------------------------------------
# the api side


class WriteFailed(Exception):
    """The API server did not take a write (unreachable, forbidden, conflicting): nothing changed."""


class RouteMirror:
    """REST notification routes written as resources, and resources held in the replica's notifier.

    A REST write changes the replica only after the resource took it, so the books (which every
    process merges through the store) never hold a route the cluster does not have."""

    WriteFailed = WriteFailed

    def __init__(self, services, kube, namespace: str):
        self.services = services
        self.kube = kube
        self.namespace = namespace
        self.errors = 0

    @property
    def notifier(self):
        return getattr(getattr(self.services, "ops", None), "notifications", None)

    # ---- REST → resource ---------------------------------------------------------------------
    async def prepare(self, body: dict, current: dict | None) -> str:
        """Check a POST/PUT body can become a resource, and name that resource (raises RouteNotWritable)."""
        channel_ids = body.get("channelIds") if "channelIds" in body else (current or {}).get("channelIds")
        channel_ids = [c for c in channel_ids or [] if isinstance(c, str)]
        name = resource_name_of(self.namespace, current["routeId"]) if current else None
        usable = {c for c in channel_ids if (name and receiver_of(self.namespace, name, c))
                  or (self.notifier.channel(c) or {}).get("webhookUrl")
                  or "webhookUrl" in kube_secret_refs(self.notifier.channel(c) or {})}
        if not usable:
            raise RouteNotWritable("in a cluster a notification route is a NotificationRoute resource, which needs a "
                                   "receiver: list at least one channel that has a webhookUrl in channelIds")
        if len(usable) > MAX_RECEIVERS:
            raise RouteNotWritable(f"a NotificationRoute holds at most {MAX_RECEIVERS} receivers; "
                                   f"{len(usable)} channels given")
        if name:
            return name
        text = body.get("name") if isinstance(body.get("name"), str) else (current or {}).get("name", "")
        try:
            return await asyncio.to_thread(claim_name, self.kube, self.namespace, text, set(self.notifier.routes.records))
        except Exception as exc:
            raise WriteFailed(f"the NotificationRoute resource could not be named: {exc}") from exc

    def draft(self, name: str, body: dict, current: dict | None) -> dict:
        """The route record `body` makes (sanitised by the notifier's own rules), kept off the books."""
        scratch = Notifier(None, env_url="")
        if current is not None:
            scratch.routes.load([copy.deepcopy(current)])
            return scratch.update_route(current["routeId"], body, audited=False)
        return scratch.create_route({**body, "routeId": resource_id("rou", self.namespace, name)}, audited=False)

    async def write(self, name: str, record: dict, *, actor: dict | None = None,
                    fresh: dict[str, tuple[str, str]] | None = None) -> dict:
        """Write `record` as NotificationRoute `name`, then hold the resource; returns the record the
        replica holds. `actor`: audit the route's change as theirs (a REST call)."""
        channels = {}
        for cid in record.get("channelIds") or []:
            channel = self.notifier.channel(cid)
            if channel is not None:
                channels[cid] = {**{k: channel.get(k) or "" for k in ("name", *SECRET_FIELDS)},
                                 "secretRef": kube_secret_refs(channel) if from_secret(channel) else {}}
        try:
            obj, given = await asyncio.to_thread(write_route, self.kube, self.namespace, name, record, channels, fresh)
        except RouteNotWritable:
            raise
        except Exception as exc:  # API server away, RBAC, a conflict that did not settle
            self.errors += 1
            log.warning("NotificationRoute %s not written: %s", name, exc)
            raise WriteFailed(f"the NotificationRoute resource {name} could not be written, nothing changed: {exc}") from exc
        held = self.hold("MODIFIED", obj, given, actor=actor)
        old = record.get("routeId")
        if held is not None and old and old != held["routeId"] and self.notifier.routes.get(old) is not None:
            self.notifier.delete_route(old, audited=False)  # a route kept from before the cluster: now the resource's
        return held

    async def delete(self, rid: str) -> None:
        """Delete the resource of route `rid` (its Secrets go with it), then the receiver channels."""
        name = resource_name_of(self.namespace, rid)
        if name is None:
            return
        try:
            await asyncio.to_thread(self.kube.delete, "NotificationRoute", self.namespace, name)
        except Exception as exc:
            self.errors += 1
            raise WriteFailed(f"the NotificationRoute resource {name} could not be deleted, nothing changed: {exc}") from exc
        forget_channels(self.notifier, {"metadata": {"namespace": self.namespace, "name": name}})

    async def channel_secret(self, cid: str, body: dict, current: dict | None) -> dict | None:
        """The `secretRef` of REST channel `cid` once `body` applies: the URL and key it gives go into a
        new Secret (the api may create Secrets, never read them), the others keep theirs; an inline
        value an older version held is moved along. The operator reads the Secret and delivers. None
        for a NotificationRoute's receiver channel: its route's Secrets are repointed instead."""
        if receiver_channel(self.namespace, cid) is not None:
            return None
        given = {f: body[f].strip()[:LIMITS[f]] if isinstance(body[f], str) else "" for f in SECRET_FIELDS if f in body}
        refs = {f: r for f, r in kube_secret_refs(current or {}).items() if f not in given} if from_secret(current) else {}
        values = {f: v for f, v in given.items() if v}
        if current is not None and not from_secret(current):
            values.update({f: current[f] for f in SECRET_FIELDS if f not in given and current.get(f)})
        if values:
            name = channel_secret_name(cid, values)
            try:
                await asyncio.to_thread(self.kube.create, channel_secret_manifest(self.namespace, name, cid, values))
            except KubeError as exc:
                if exc.status != 409:  # 409: this content has its Secret already
                    self.errors += 1
                    raise WriteFailed(f"the Secret for channel {cid} could not be created, nothing changed: {exc}") from exc
            except Exception as exc:
                self.errors += 1
                raise WriteFailed(f"the Secret for channel {cid} could not be created, nothing changed: {exc}") from exc
            refs.update({f: {"name": name, "key": CHANNEL_KEYS[f]} for f in values})
        return refs

    async def channel_changed(self, channel: dict) -> None:
        """A channel got a new URL or key: every receiver made from it gets a new Secret."""
        cid = channel["channelId"]
        values = (channel.get("webhookUrl") or "", channel.get("signingKey") or "")
        if cid == ENV_CHANNEL_ID or not values[0]:
            return
        try:
            objs = await asyncio.to_thread(self.kube.list, "NotificationRoute", self.namespace)
        except Exception as exc:
            self.errors += 1
            log.warning("channel %s changed, NotificationRoutes not read: %s", cid, exc)
            return
        own = receiver_channel(self.namespace, cid)
        for obj in objs:
            name = obj["metadata"]["name"]
            fresh = {receiver: values for receiver, source in _sources(obj["metadata"].get("annotations") or {}).items()
                     if source == cid}
            if own and own[0] == name:
                fresh[own[1]] = values
            if fresh:
                try:
                    await self.write(name, route_body(obj), fresh=fresh)
                except (WriteFailed, RouteNotWritable) as exc:
                    log.warning("channel %s changed, %s", cid, exc)

    # ---- resource → replica --------------------------------------------------------------------
    def hold(self, event_type: str, obj: dict, given: dict[str, tuple[str, str]] | None = None,
             actor: dict | None = None) -> dict | None:
        """Hold one NotificationRoute in the replica's notifier. Without `actor` nothing is audited
        (the change was audited where it was made). Receiver channels get a URL only when this
        replica was given it (`given`); the others keep what the store gave them, or stay absent."""
        notifier = self.notifier
        if notifier is None:
            return None
        if event_type == "DELETED":
            notifier.delete_route(route_id(obj), audited=False)
            forget_channels(notifier, obj)
            return None
        body = route_body(obj)
        if route_differs(notifier, body):
            notifier.create_route(body, actor=actor or ACTOR, audited=actor is not None)
        spec = NotificationRoute.model_validate(obj).spec
        for receiver in spec.receivers:
            channel = receiver_channel_body(obj, receiver.name, spec.enabled)
            if given and receiver.name in given:
                channel.update(zip(SECRET_FIELDS, given[receiver.name]))
            existing = notifier.channels.get(channel["channelId"])
            if existing is None and "webhookUrl" not in channel:
                continue  # its URL is in a Secret this replica cannot read
            if existing is None or any(existing.get(k, "") != v for k, v in channel.items()):
                notifier.create_channel(channel, actor=ACTOR, audited=False)
        forget_channels(notifier, obj, keep={channel_id(obj, r.name) for r in spec.receivers})
        return notifier.routes.get(body["routeId"])
