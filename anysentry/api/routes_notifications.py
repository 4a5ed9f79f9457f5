"""Notification channels, routes and the delivery log (SPEC §17). Secrets are write-only.

A channel's webhook URL and HMAC key never reach the store: in a cluster they go into a Secret the api
creates, standalone into a local file beside the store (`_keep_channel`).

In a cluster (`services.mirror` set) a route is a NotificationRoute resource: POST, PUT and DELETE
write it (its receivers' URLs go into Secrets the api creates), and a new URL on a channel repoints
the receivers made from it (`anysentry.operator.mirror_routes`)."""

from __future__ import annotations

import secrets

from aiohttp import web

from anysentry.api.app import SERVICES, management
from anysentry.api.auth import actor_from
from anysentry.api.http import ApiError, clamp_int, ok, read_object
from anysentry.events.ids import hash_id
from anysentry.events.timefmt import now_ms
from anysentry.ops.local_channel_secrets import keep_channel, local_store
from anysentry.ops.notifications import ENV_CHANNEL_ID, SECRET_FIELDS, NotificationError, Notifier, _text

SELECTORS = ("channelId", "routeId", "kind", "minSeverity", "workspacePath", "agentId", "collectorId", "sourceId",
             "owner", "team", "deliveryId", "alertId", "incidentId", "eventId", "taskId", "objectiveId", "issueId")


def _notifier(request: web.Request) -> Notifier:
    notifier = getattr(request.app[SERVICES].ops, "notifications", None)
    if notifier is None:
        raise ApiError(503, "notifications are not available")
    return notifier


def _cluster_routes(request: web.Request):
    """The resource side of notification routes when running in a cluster, else None."""
    return getattr(getattr(request.app[SERVICES], "mirror", None), "routes", None)


async def _write_resource(request: web.Request, body: dict, current: dict | None) -> dict:
    """In a cluster: the route as its NotificationRoute (400 when it cannot be one, 503 when the API
    server did not take it); the replica's books change only after the resource did."""
    routes = _cluster_routes(request)
    try:
        name = await routes.prepare(body, current)
        return await routes.write(name, routes.draft(name, body, current), actor=actor_from(request))
    except NotificationError as exc:
        raise ApiError(400, str(exc)) from exc
    except routes.WriteFailed as exc:
        raise ApiError(503, str(exc)) from exc


async def _channel_secrets_changed(request: web.Request, body: dict, record: dict) -> None:
    routes = _cluster_routes(request)
    if routes is not None and any(key in body for key in SECRET_FIELDS):
        await routes.channel_changed(record)


async def _keep_channel(request: web.Request, notifier: Notifier, body: dict, channel_id: str) -> dict:
    """Create or change a channel so that its URL and key never reach the store: in a cluster they go
    into a Secret the api creates (the operator reads it and delivers), standalone into a local file
    beside the store (`ops.local_channel_secrets`). Either way the channel is Secret-sourced."""
    actor = actor_from(request)
    try:
        if channel_id == ENV_CHANNEL_ID:
            raise NotificationError(f"channel {ENV_CHANNEL_ID} is read-only (set by ANYSENTRY_ALERT_WEBHOOK_URL)")
        routes = _cluster_routes(request)
        if routes is not None:
            ref = None
            if any(key in body for key in SECRET_FIELDS):
                try:
                    ref = await routes.channel_secret(channel_id, body, notifier.channels.get(channel_id))
                except routes.WriteFailed as exc:
                    raise ApiError(503, str(exc)) from exc
            return notifier.create_channel({**body, "channelId": channel_id}, actor=actor, secret_ref=ref)
        store = local_store(request.app[SERVICES])
        if store is None:
            raise ApiError(503, "notification channels cannot be kept here")
        try:
            return keep_channel(notifier, store, body, channel_id, actor=actor)
        except OSError as exc:
            raise ApiError(503, f"the channel's webhook URL and key could not be kept: {exc.strerror}") from exc
    except NotificationError as exc:
        raise ApiError(400, str(exc)) from exc


async def create_channel(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    notifier = _notifier(request)
    channel_id = _text(body.get("channelId"), 160) or hash_id("chn", [now_ms(), secrets.token_hex(8)])
    existed = notifier.channels.get(channel_id) is not None
    record = await _keep_channel(request, notifier, body, channel_id)
    if existed:
        await _channel_secrets_changed(request, body, record)
    return ok(notifier.channel_item(record), status=201)


async def update_channel(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    notifier = _notifier(request)
    channel_id = request.match_info["channel_id"]
    if channel_id != ENV_CHANNEL_ID and notifier.channels.get(channel_id) is None:
        raise ApiError(404, "notification channel not found")
    record = await _keep_channel(request, notifier, {k: v for k, v in body.items() if k != "channelId"}, channel_id)
    await _channel_secrets_changed(request, body, record)
    return ok(notifier.channel_item(record))


async def create_route(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    notifier = _notifier(request)
    if _cluster_routes(request) is not None:
        record = await _write_resource(request, body, notifier.routes.get(str(body.get("routeId") or "")))
    else:
        record = notifier.create_route(body, actor=actor_from(request))
    return ok(notifier.route_item(record), status=201)


async def update_route(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    notifier = _notifier(request)
    current = notifier.routes.get(request.match_info["route_id"])
    if current is None:
        raise ApiError(404, "notification route not found")
    if _cluster_routes(request) is not None:
        record = await _write_resource(request, body, current)
    else:
        record = notifier.update_route(current["routeId"], body, actor=actor_from(request))
    return ok(notifier.route_item(record))


async def delete_route(request: web.Request) -> web.Response:
    """Not in SPEC §17 (which only creates and changes routes): routes are resources in a cluster, and
    REST removes what it creates. Channels stay, except a resource's own receiver channels."""
    management(request)
    notifier = _notifier(request)
    current = notifier.routes.get(request.match_info["route_id"])
    if current is None:
        raise ApiError(404, "notification route not found")
    routes = _cluster_routes(request)
    if routes is not None:
        try:
            await routes.delete(current["routeId"])
        except routes.WriteFailed as exc:
            raise ApiError(503, str(exc)) from exc
    notifier.delete_route(current["routeId"], actor=actor_from(request))
    return ok(notifier.route_item(current))


async def notification_config(request: web.Request) -> web.Response:
    notifier = _notifier(request)
    query = {k: request.query.get(k, "") for k in SELECTORS}
    limit = clamp_int(request.query.get("limit"), 1, 300, 80)
    return ok(notifier.config(query, limit))


ROUTES = [
    web.post("/security-center/notifications/channels", create_channel),
    web.put("/security-center/notifications/channels/{channel_id}", update_channel),
    web.post("/security-center/notifications/routes", create_route),
    web.put("/security-center/notifications/routes/{route_id}", update_route),
    web.delete("/security-center/notifications/routes/{route_id}", delete_route),
    web.get("/security-center/notifications/config", notification_config),
]
