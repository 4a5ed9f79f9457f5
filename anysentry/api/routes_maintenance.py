"""Maintenance windows (SPEC §19): list, create, update.

In a cluster a window is a `MaintenanceWindow` resource: a create records it under the id of the
resource the mirror names for it (`claim_id`), then writes that resource, so REST, the replicas and
the operator hold one record; PUT writes the resource again."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES, management, publish_resource, with_resource_id
from anysentry.api.auth import actor_from
from anysentry.api.http import ApiError, ok, read_object


def _book(request: web.Request):
    return request.app[SERVICES].ops.maintenance


def _audit(request: web.Request, window: dict, summary: str) -> None:
    request.app[SERVICES].audit.record(
        "maintenance.window.updated", "maintenance", window["windowId"], summary, actor=actor_from(request),
        details={"windowId": window["windowId"], "targetType": window.get("targetType"),
                 "targetId": window.get("targetId"), "enabled": window.get("enabled"),
                 "startAt": window.get("startAt"), "endAt": window.get("endAt")})


async def list_windows(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(_book(request).list(body))


async def create_window(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    book = _book(request)
    window = book.create(await with_resource_id(request, "MaintenanceWindow", "windowId", body, book))
    publish_resource(request, "MaintenanceWindow", window)
    _audit(request, window, f"maintenance window {window['title']} saved")
    return ok(book.item(window), status=201)


async def update_window(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    book = _book(request)
    window = book.update(request.match_info["window_id"].strip()[:160], body)
    if window is None:
        raise ApiError(404, "maintenance window not found")
    publish_resource(request, "MaintenanceWindow", window)
    _audit(request, window, f"maintenance window {window['title']} updated")
    return ok(book.item(window))


ROUTES = [
    web.post("/security-center/maintenance/list", list_windows),
    web.post("/security-center/maintenance/windows", create_window),
    web.put("/security-center/maintenance/windows/{window_id}", update_window),
]
