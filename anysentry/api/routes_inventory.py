"""Inventory, metadata overlay, human review, topology and the identity snapshot (SPEC §24)."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES, management
from anysentry.api.auth import actor_from
from anysentry.api.http import ApiError, ok, raw_json, read_object, text
from anysentry.ops.inventory_identity import REVIEW_DECISIONS


def _inventory(request: web.Request):
    inventory = getattr(request.app[SERVICES].ops, "inventory", None)
    if inventory is None:
        raise ApiError(503, "inventory is not available")
    return inventory


async def agents_inventory(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(await _inventory(request).agents(body))


async def workspaces_inventory(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(await _inventory(request).workspaces(body))


async def topology(request: web.Request) -> web.Response:
    body = await read_object(request)
    engine = getattr(request.app[SERVICES].ops, "topology", None)
    if engine is None:
        raise ApiError(503, "topology is not available")
    return ok(await engine.query(body))


async def list_metadata(request: web.Request) -> web.Response:
    return ok(await _inventory(request).metadata_list())


async def put_metadata(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    if not text(body.get("workspacePath"), 1024):
        raise ApiError(400, "workspacePath is required")
    inventory = _inventory(request)
    record = inventory.put_metadata(request.match_info["agent_id"], body, actor=actor_from(request))
    return ok(inventory.metadata_item(record))


async def put_review(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    decision = text(body.get("decision"), 32).lower()
    if decision not in REVIEW_DECISIONS:
        raise ApiError(400, f"invalid review decision: expected one of {', '.join(REVIEW_DECISIONS)}")
    inventory = _inventory(request)
    record = inventory.put_review(request.match_info["agent_id"], {**body, "decision": decision}, actor=actor_from(request))
    return ok(record if decision == "clear" else inventory.review_item(record))


async def identity_snapshot(request: web.Request) -> web.Response:
    return raw_json(await _inventory(request).snapshot(request.query.get("nodeName", "")))


ROUTES = [
    web.post("/security-center/agents/inventory", agents_inventory),
    web.post("/security-center/workspaces/inventory", workspaces_inventory),
    web.post("/security-center/agents/topology", topology),
    web.get("/security-center/agents/metadata", list_metadata),
    web.put("/security-center/agents/{agent_id}/metadata", put_metadata),
    web.put("/security-center/agents/{agent_id}/review", put_review),
    web.get("/security-center/identity/snapshot", identity_snapshot),
]
