"""`NotificationRoute`: receivers and match become channels and a route of the notifier.

Each receiver's webhook URL (and optional HMAC key) is read from its Secret by the operator (the api
never reads Secrets) into a webhook channel `chn_<ns>_<route>_<receiver>`; the route
`rou_<ns>_<route>` sends the matching alerts to them (SPEC §17). The values stay in the operator's
memory: the channel is marked as Secret-sourced (`secretRef`), so the store gets it without URL or
key, the api replicas leave it alone, and the operator delivers (`ops.notification_secrets`). They are
read again on every reconcile, and on start (kopf resumes every route) before anything is delivered
to a channel the store gave back without them. Deliveries api replicas queue for those channels are
sent from here too (`deliver_handed_over`, every operations cycle). Channels created through REST in
a cluster keep their URL and key in a Secret the api creates (`mirror_routes.RouteMirror.channel_secret`):
every cycle, a Secret-sourced channel the store gave without values gets them from the Secrets it
names (`hold_channel_secrets`), so the operator delivers to it too. Status: deliveries ok / failed / not
sent through this route, the last delivery and error, per-receiver state; `Ready=False` with reason
`SecretNotFound` (and a Warning Event) while a referenced Secret or key is missing.

Routes written through REST (`mirror_routes`) reference Secrets the api creates right after the
resource (they need its uid): while such a route is young, a missing Secret is retried, not warned
about. The api never changes or deletes a Secret, so the operator removes the api's receiver Secrets
no route references any more, once they are older than a grace period (a new Secret is unreferenced
for the moment between its creation and the repointing of its route)."""

from __future__ import annotations

import base64
import logging
import os
from datetime import datetime

import kopf

from anysentry.operator import events
from anysentry.ops.standalone import REF_FIELDS, apply_route, channel_id, forget_channels, route_id, secret_refs
from anysentry.ops.objectives import API_MANAGER, MANAGED_BY
from anysentry.ops.notification_secrets import QUEUED, ChannelBook, from_secret, kube_secret_refs, restore_values
from anysentry.operator.kube import plain
from anysentry.operator.loops import Installation, Runtime, register_publisher, runtime
from anysentry.operator.mirror_routes import CHANNEL_LABEL, ROUTE_LABEL
from anysentry.operator.status import awrite_status, from_ms, now_utc, parse_time, with_conditions
from anysentry.resources.models import GROUP, VERSION, NotificationRoute, NotificationRouteStatus, ReceiverStatus

log = logging.getLogger("anysentry.operator.notifications")

SECRETS_PENDING_SECS = 30.0  # a REST-written route's Secrets follow it within this


def _grace_secs(default: float = 60.0) -> float:
    """How old an unreferenced api Secret must be before it is removed (env, for tests)."""
    try:
        return max(0.0, float(os.environ.get("ANYSENTRY_OPERATOR_SECRET_GRACE_SECS", "") or default))
    except ValueError:
        return default


SECRET_GRACE_SECS = _grace_secs()
API_SECRETS = f"{MANAGED_BY}={API_MANAGER},{ROUTE_LABEL}"
CHANNEL_SECRETS = f"{MANAGED_BY}={API_MANAGER},{CHANNEL_LABEL}"  # REST channels' own Secrets


def secret_value(secret: dict | None, key: str) -> str | None:
    if not secret:
        return None
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw).decode("utf-8").strip()
    except (ValueError, UnicodeDecodeError):
        return None


async def read_secret_values(kube, namespace: str, refs: dict, cache: dict[str, dict | None]) -> dict[str, str | None]:
    """{field: value} of the Secret keys `refs` names ({field: {name, key}}), None where the Secret or
    its key is missing; each Secret is read once per `cache` (name → the Secret, or None when absent)."""
    values: dict[str, str | None] = {}
    for field_, ref in refs.items():
        if ref["name"] not in cache:
            cache[ref["name"]] = await kube.get("Secret", namespace, ref["name"])
        values[field_] = secret_value(cache[ref["name"]], ref.get("key") or "")
    return values


async def resolve_receivers(kube, obj: dict) -> tuple[dict[str, dict], list[str]]:
    """{receiver: {webhookUrl, signingKey}} and the problems (missing Secrets or keys)."""
    resource = NotificationRoute.model_validate(obj)
    ns = obj["metadata"]["namespace"]
    cache: dict[str, dict | None] = {}
    out, problems = {}, []
    for receiver in resource.spec.receivers:
        refs = secret_refs(receiver)
        read = await read_secret_values(kube, ns, refs, cache)
        values = {}
        for field_, value in read.items():
            if value is None:
                name, key = refs[field_]["name"], refs[field_]["key"]
                what = f"Secret {name}" if cache[name] is None else f"key {key} of Secret {name}"
                problems.append(f"receiver {receiver.name}: {what} not found")
            else:
                values[field_] = value
        out[receiver.name] = values
    return out, problems


def route_status(obj: dict, engine, record: dict | None, problems: list[str], now) -> NotificationRouteStatus:
    generation = int(obj["metadata"].get("generation") or 0)
    if record is None:
        ready = ("Ready", "False", "EngineUnavailable", "the notifications area of the operations engine is not available")
        return NotificationRouteStatus(observedGeneration=generation, routeId=route_id(obj),
                                       conditions=with_conditions(obj, [ready], generation, now))
    notifier = engine.notifications
    rid = record["routeId"]
    deliveries = [d for d in notifier.deliveries.values() if d.get("routeId") == rid and d.get("status") != QUEUED]
    deliveries.sort(key=lambda d: d.get("sentAt") or 0)
    errors = [d for d in deliveries if d.get("status") == "error"]
    receivers = []
    for receiver in NotificationRoute.model_validate(obj).spec.receivers:
        cid = channel_id(obj, receiver.name)
        channel = notifier.channels.get(cid) or {}
        receivers.append(ReceiverStatus(name=receiver.name, channelId=cid, lastStatus=channel.get("lastStatus") or "",
                                        lastSentAt=from_ms(channel.get("lastSentAt")), lastError=channel.get("lastError") or ""))
    if problems:
        ready = ("Ready", "False", "SecretNotFound", "; ".join(problems))
    else:
        ready = ("Ready", "True", "Resolved", f"{len(receivers)} receiver(s) resolved")
    return NotificationRouteStatus(
        observedGeneration=generation,
        conditions=with_conditions(obj, [ready], generation, now),
        routeId=rid,
        delivered=sum(1 for d in deliveries if d.get("status") == "ok"),
        failed=len(errors),
        notSent=sum(1 for d in deliveries if d.get("status") == "not_sent"),
        lastDeliveryAt=from_ms(deliveries[-1].get("sentAt")) if deliveries else None,
        lastError=(errors[-1].get("error") or "") if errors else "",
        receivers=receivers,
    )


def _age_secs(obj: dict, now: datetime) -> float | None:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return None if created is None else (now - created).total_seconds()


def secrets_pending(obj: dict, now: datetime) -> bool:
    """A route the api wrote moments ago: its Secrets may not exist yet."""
    age = _age_secs(obj, now)
    labels = obj["metadata"].get("labels") or {}
    return labels.get(MANAGED_BY) == API_MANAGER and age is not None and age < SECRETS_PENDING_SECS


async def publish_route(kube, engine, obj: dict) -> NotificationRouteStatus:
    now = now_utc()
    receivers, problems = await resolve_receivers(kube, obj)
    record = apply_route(engine, obj, receivers)
    status = route_status(obj, engine, record, problems, now)
    old = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}.get("Ready", {})
    if problems and old.get("reason") != "SecretNotFound" and not secrets_pending(obj, now):
        await events.aemit(kube, obj, "SecretNotFound", "; ".join(problems), events.WARNING)
    await awrite_status(kube, "NotificationRoute", obj["metadata"]["namespace"], obj["metadata"]["name"], status)
    return status


def route_secret_names(routes: list[dict]) -> set[str]:
    """The Secrets the receivers of these NotificationRoutes reference."""
    return {receiver[ref]["name"] for route in routes for receiver in (route.get("spec") or {}).get("receivers") or []
            for _, ref in REF_FIELDS if (receiver.get(ref) or {}).get("name")}


def unreferenced_secrets(secrets: list[dict], referenced: set[str], now: datetime,
                         grace: float = SECRET_GRACE_SECS) -> list[str]:
    """Names of the api's Secrets not among `referenced` and past the grace (the api creates a Secret
    before what references it is written)."""
    stale = []
    for secret in secrets:
        meta = secret.get("metadata") or {}
        age = _age_secs(secret, now)
        if meta.get("name") not in referenced and age is not None and age >= grace:
            stale.append(meta["name"])
    return stale


async def _delete_unreferenced(kube, namespace: str, secrets: list[dict], referenced: set[str], grace: float,
                               why: str) -> list[str]:
    stale = unreferenced_secrets(secrets, referenced, now_utc(), grace)
    for name in stale:
        await kube.delete("Secret", namespace, name)
        log.info("removed Secret %s/%s: %s", namespace, name, why)
    return stale


async def prune_api_secrets(kube, namespace: str, routes: list[dict] | None = None) -> list[str]:
    """Delete the api's receiver Secrets nothing references any more; returns their names."""
    secrets = await kube.list("Secret", namespace, label_selector=API_SECRETS)
    if not secrets:
        return []
    if routes is None:
        routes = await kube.list("NotificationRoute", namespace)
    return await _delete_unreferenced(kube, namespace, secrets, route_secret_names(routes), SECRET_GRACE_SECS,
                                      "no NotificationRoute references it any more")


async def prune_channel_secrets(kube, engine, namespace: str, routes: list[dict] | None = None, *,
                                grace: float | None = None) -> list[str]:
    """Delete the Secrets of REST channels that neither a channel nor a route receiver references any
    more: a new URL or key went into a new Secret. The channel book must hold the store's channels
    (the caller checks): an empty book would otherwise take every channel's Secret for a stale one."""
    notifier = getattr(engine, "notifications", None)
    if notifier is None:
        return []
    secrets = await kube.list("Secret", namespace, label_selector=CHANNEL_SECRETS)
    if not secrets:
        return []
    if routes is None:
        routes = await kube.list("NotificationRoute", namespace)
    referenced = route_secret_names(routes) | {ref["name"] for channel in list(notifier.channels.values())
                                                for ref in kube_secret_refs(channel).values()}
    return await _delete_unreferenced(kube, namespace, secrets, referenced,
                                      SECRET_GRACE_SECS if grace is None else grace,
                                      "its channel's URL and key are in a newer Secret")


@register_publisher
async def publish_routes(rt: Runtime, inst: Installation) -> None:
    routes = await rt.kube.list("NotificationRoute", inst.namespace)
    for obj in routes:
        await publish_route(rt.kube, inst.engine, obj)
    await prune_api_secrets(rt.kube, inst.namespace, routes)
    if inst.sync is not None and inst.sync.has_read(ChannelBook.table_name):
        await prune_channel_secrets(rt.kube, inst.engine, inst.namespace, routes)


async def hold_channel_secrets(kube, engine, namespace: str) -> list[str]:
    """Every Secret-sourced channel of the book that lacks its values (a REST channel whose URL and key
    the api put into a Secret, or any channel the store gave back without them) gets them from the
    Secrets its `secretRef` names, held in memory only; a missing Secret is retried next cycle.
    Returns the ids of the channels that got their values."""
    notifier = getattr(engine, "notifications", None)
    if notifier is None:
        return []
    cache: dict[str, dict | None] = {}
    held = []
    for channel in list(notifier.channels.values()):
        refs = kube_secret_refs(channel)
        if not from_secret(channel) or "webhookUrl" in channel or not refs:
            continue
        values = await read_secret_values(kube, namespace, refs, cache)
        if any(v is None for v in values.values()):
            log.debug("channel %s: a Secret it references is not readable yet", channel["channelId"])
            continue
        restore_values(channel, values)  # in memory: nothing to write back
        held.append(channel["channelId"])
    return held


@register_publisher
async def hold_channels(rt: Runtime, inst: Installation) -> None:
    """Before handed-over deliveries are sent: every channel's values read from its Secrets."""
    await hold_channel_secrets(rt.kube, inst.engine, inst.namespace)


@register_publisher
async def deliver_handed_over(rt: Runtime, inst: Installation) -> None:
    """Send the deliveries to Secret-sourced channels that api replicas queued in the store (alerts
    changed by the requests they serve): this process holds the URLs and keys."""
    notifier = getattr(inst.engine, "notifications", None)
    if notifier is None or not hasattr(notifier, "take_over"):
        return
    for entry in [d for d in notifier.deliveries.values() if d.get("status") == QUEUED]:
        notifier.take_over(entry)


def forget_route(engine, obj: dict) -> None:
    notifier = getattr(engine, "notifications", None)
    if notifier is None:
        return
    notifier.routes.remove(route_id(obj))
    forget_channels(notifier, obj)


@kopf.on.resume(GROUP, VERSION, "notificationroutes")
@kopf.on.create(GROUP, VERSION, "notificationroutes")
@kopf.on.update(GROUP, VERSION, "notificationroutes")
async def route_changed(body, namespace, **_):
    rt = runtime()
    obj = plain(body)
    status = await publish_route(rt.kube, rt.engine(namespace), obj)
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    if ready is not None and ready.reason == "SecretNotFound" and secrets_pending(obj, now_utc()):
        raise kopf.TemporaryError("waiting for the Secrets the api creates with the route", delay=1)
    await prune_api_secrets(rt.kube, namespace)


@kopf.on.delete(GROUP, VERSION, "notificationroutes", optional=True)
async def route_deleted(body, namespace, **_):
    forget_route(runtime().engine(namespace), plain(body))
