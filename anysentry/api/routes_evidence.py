"""Evidence bundles and their Markdown export (SPEC §26): read-only, never management-gated."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES
from anysentry.api.http import ApiError, ok, read_object


def _evidence(request: web.Request):
    evidence = getattr(request.app[SERVICES].ops, "evidence", None)
    if evidence is None:
        raise ApiError(503, "evidence bundles are not available")
    return evidence


async def bundle(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(await _evidence(request).build(body))


async def export(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(await _evidence(request).export(body))


ROUTES = [
    web.post("/security-center/evidence/bundle", bundle),
    web.post("/security-center/evidence/export", export),
]
