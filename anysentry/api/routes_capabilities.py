"""`GET|POST /security-center/capabilities` (SPEC §13): the progressive API. Never management-gated;
GET reads the query string (list, search, describe only: execute needs a POST body)."""

from __future__ import annotations

from aiohttp import web

from anysentry.api import capabilities
from anysentry.api.app import SERVICES
from anysentry.api.http import ok, read_object


async def capabilities_get(request: web.Request) -> web.Response:
    body = {key: request.query.getone(key) for key in request.query.keys()}
    return ok(await capabilities.handle(request.app[SERVICES], body, method="GET", headers=request.headers))


async def capabilities_post(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(await capabilities.handle(request.app[SERVICES], body, method="POST", headers=request.headers))


ROUTES = [
    web.get("/security-center/capabilities", capabilities_get, allow_head=False),
    web.post("/security-center/capabilities", capabilities_post),
]
