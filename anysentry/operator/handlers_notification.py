"""`NotificationRoute`: receivers and match become channels and a route of the notifier.

Each receiver's webhook URL (and optional HMAC key) is read from its Secret by the operator (the api
never reads Secrets) into a webhook channel `chn_<ns>_<route>_<receiver>`; the route
`rou_<ns>_<route>` sends the matching alerts to them (SPEC §17). Status: deliveries ok / failed / not
sent through this route, the last delivery and error, per-receiver state; `Ready=False` with reason
`SecretNotFound` (and a Warning Event) while a referenced Secret or key is missing."""

from __future__ import annotations

import base64

import kopf

from anysentry.operator import events
from anysentry.ops.standalone import apply_route, channel_id, route_id
from anysentry.operator.kube import plain
from anysentry.operator.loops import Installation, Runtime, register_publisher, runtime
from anysentry.operator.status import awrite_status, from_ms, now_utc, with_conditions
from anysentry.resources.models import GROUP, VERSION, NotificationRoute, NotificationRouteStatus, ReceiverStatus


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


async def resolve_receivers(kube, obj: dict) -> tuple[dict[str, dict], list[str]]:
    """{receiver: {webhookUrl, signingKey}} and the problems (missing Secrets or keys)."""
    resource = NotificationRoute.model_validate(obj)
    ns = obj["metadata"]["namespace"]
    cache: dict[str, dict | None] = {}
    out, problems = {}, []
    for receiver in resource.spec.receivers:
        values = {}
        for field_, ref in (("webhookUrl", receiver.webhookUrlSecretRef), ("signingKey", receiver.hmacKeySecretRef)):
            if ref is None:
                continue
            if ref.name not in cache:
                cache[ref.name] = await kube.get("Secret", ns, ref.name)
            value = secret_value(cache[ref.name], ref.key)
            if value is None:
                what = f"Secret {ref.name}" if cache[ref.name] is None else f"key {ref.key} of Secret {ref.name}"
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
    deliveries = [d for d in notifier.deliveries.values() if d.get("routeId") == rid]
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


async def publish_route(kube, engine, obj: dict) -> NotificationRouteStatus:
    now = now_utc()
    receivers, problems = await resolve_receivers(kube, obj)
    record = apply_route(engine, obj, receivers)
    status = route_status(obj, engine, record, problems, now)
    old = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}.get("Ready", {})
    if problems and old.get("reason") != "SecretNotFound":
        await events.aemit(kube, obj, "SecretNotFound", "; ".join(problems), events.WARNING)
    await awrite_status(kube, "NotificationRoute", obj["metadata"]["namespace"], obj["metadata"]["name"], status)
    return status


@register_publisher
async def publish_routes(rt: Runtime, inst: Installation) -> None:
    for obj in await rt.kube.list("NotificationRoute", inst.namespace):
        await publish_route(rt.kube, inst.engine, obj)


def forget_route(engine, obj: dict) -> None:
    notifier = getattr(engine, "notifications", None)
    if notifier is None:
        return
    notifier.routes.remove(route_id(obj))
    for cid in [c for c in list(notifier.channels.records) if c.startswith(channel_id(obj, ""))]:
        notifier.channels.remove(cid)


@kopf.on.resume(GROUP, VERSION, "notificationroutes")
@kopf.on.create(GROUP, VERSION, "notificationroutes")
@kopf.on.update(GROUP, VERSION, "notificationroutes")
async def route_changed(body, namespace, **_):
    rt = runtime()
    await publish_route(rt.kube, rt.engine(namespace), plain(body))


@kopf.on.delete(GROUP, VERSION, "notificationroutes", optional=True)
async def route_deleted(body, namespace, **_):
    forget_route(runtime().engine(namespace), plain(body))
