"""Objectives (SPEC §18): list (evaluates), create, update.

In a cluster an objective is an `Objective` resource: a create records it under the id of the
resource the mirror names for it (`claim_id`), then writes that resource, so REST, the replicas and
the operator hold one record; PUT writes the resource again."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES, management, publish_resource, with_resource_id
from anysentry.api.auth import actor_from
from anysentry.api.http import ApiError, ok, read_object


def _book(request: web.Request):
    return request.app[SERVICES].ops.objectives


def _audit(request: web.Request, record: dict, summary: str) -> None:
    request.app[SERVICES].audit.record(
        "objective.updated", "objective", record["objectiveId"], summary, actor=actor_from(request),
        details={"objectiveId": record["objectiveId"], "metric": record.get("metric"),
                 "targetType": record.get("targetType"), "targetId": record.get("targetId"),
                 "status": record.get("status"), "enabled": record.get("enabled")})


async def list_objectives(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(await _book(request).list(body))


async def create_objective(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    book = _book(request)
    record = await book.create(await with_resource_id(request, "Objective", "objectiveId", body, book))
    publish_resource(request, "Objective", record)
    _audit(request, record, f"objective {record['name']} saved")
    return ok(book.item(record), status=201)


async def update_objective(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    book = _book(request)
    record = await book.update(request.match_info["objective_id"].strip()[:160], body)
    if record is None:
        raise ApiError(404, "objective not found")
    publish_resource(request, "Objective", record)
    _audit(request, record, f"objective {record['name']} updated")
    return ok(book.item(record))


ROUTES = [
    web.post("/security-center/objectives/list", list_objectives),
    web.post("/security-center/objectives", create_objective),
    web.put("/security-center/objectives/{objective_id}", update_objective),
]
