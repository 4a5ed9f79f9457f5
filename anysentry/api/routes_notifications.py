"""Notification channels, routes and the delivery log (SPEC §17). Secrets are write-only."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES, management
from anysentry.api.auth import actor_from
from anysentry.api.http import ApiError, clamp_int, ok, read_object
from anysentry.ops.notifications import NotificationError, Notifier

SELECTORS = ("channelId", "routeId", "kind", "minSeverity", "workspacePath", "agentId", "collectorId", "sourceId",
             "owner", "team", "deliveryId", "alertId", "incidentId", "eventId", "taskId", "objectiveId", "issueId")


def _notifier(request: web.Request) -> Notifier:
    notifier = getattr(request.app[SERVICES].ops, "notifications", None)
    if notifier is None:
        raise ApiError(503, "notifications are not available")
    return notifier


async def create_channel(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    notifier = _notifier(request)
    try:
        record = notifier.create_channel(body, actor=actor_from(request))
    except NotificationError as exc:
        raise ApiError(400, str(exc)) from exc
    return ok(notifier.channel_item(record), status=201)


async def update_channel(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    notifier = _notifier(request)
    try:
        record = notifier.update_channel(request.match_info["channel_id"], body, actor=actor_from(request))
    except NotificationError as exc:
        raise ApiError(400, str(exc)) from exc
    if record is None:
        raise ApiError(404, "notification channel not found")
    return ok(notifier.channel_item(record))


async def create_route(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    notifier = _notifier(request)
    record = notifier.create_route(body, actor=actor_from(request))
    return ok(notifier.route_item(record), status=201)


async def update_route(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    notifier = _notifier(request)
    record = notifier.update_route(request.match_info["route_id"], body, actor=actor_from(request))
    if record is None:
        raise ApiError(404, "notification route not found")
    return ok(notifier.route_item(record))


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
    web.get("/security-center/notifications/config", notification_config),
]
