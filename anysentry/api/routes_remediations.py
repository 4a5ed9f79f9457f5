"""Remediation tasks (SPEC §21): list (generates and merges tasks), update."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES, management
from anysentry.api.auth import actor_from
from anysentry.api.http import ApiError, ok, read_object


def _book(request: web.Request):
    return request.app[SERVICES].ops.remediation


async def list_tasks(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(await _book(request).list(body))


async def update_task(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    book = _book(request)
    task = book.update(request.match_info["task_id"].strip()[:160], body)
    if task is None:
        raise ApiError(404, "remediation not found")
    request.app[SERVICES].audit.record(
        "remediation.updated", "remediation", task["taskId"], f"remediation {task['title']} set to {task['status']}",
        actor=actor_from(request),
        details={"taskId": task["taskId"], "status": task["status"], "owner": task.get("owner", ""),
                 "sourceType": task.get("sourceType"), "sourceId": task.get("sourceId"),
                 "incidentId": task.get("incidentId", ""), "alertId": task.get("alertId", ""),
                 "objectiveId": (task.get("labels") or {}).get("objectiveId", ""),
                 "issueId": (task.get("labels") or {}).get("issueId", ""),
                 "completedStepIds": [s["stepId"] for s in task.get("steps", []) if s.get("done")]})
    return ok(book.item(task))


ROUTES = [
    web.post("/security-center/remediations/list", list_tasks),
    web.put("/security-center/remediations/{task_id}", update_task),
]
