"""Coverage overview (SPEC §20); reading it opens and resolves `coverage.issue` alerts."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES
from anysentry.api.http import ok, read_object


async def overview(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(await request.app[SERVICES].ops.coverage.overview(body))


ROUTES = [web.post("/security-center/coverage/overview", overview)]
