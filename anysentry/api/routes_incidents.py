"""Incidents (SPEC §15): the list with filters, pinning and summary, and the management update."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES, management
from anysentry.api.auth import actor_from
from anysentry.api.http import ApiError, clamp_int, ok, read_object, text
from anysentry.events.timefmt import display_time, now_ms
from anysentry.judge.decision import SEVERITIES, severity_rank
from anysentry.ops.incidents import STATUS_ORDER, STATUSES, incident_item
from anysentry.store.window import TimeWindow

EXACT_FILTERS = ("workspacePath", "agentId", "collectorId", "sourceId", "sessionId", "traceId")


def _in_window(record: dict, window: TimeWindow) -> bool:
    """Active incidents stay visible whatever their age; resolved ones while touched in the window."""
    if (record.get("openedAt") or 0) > window.end:
        return False
    if record.get("status") != "resolved":
        return True
    return max(record.get("lastEventAt") or 0, record.get("updatedAt") or 0) >= window.start


def _sort_key(record: dict) -> tuple:
    return (STATUS_ORDER.get(record.get("status"), 9), -severity_rank(record.get("severity", "info")),
            -(record.get("lastEventAt") or 0))


def query_incidents(engine, body: dict, now: int | None = None) -> dict:
    """`POST /incidents/list` as data (also usable by capabilities and evidence)."""
    book = getattr(engine, "incidents", None)
    records = book.values() if book is not None else []
    window = TimeWindow.from_body(body, now=now)
    pin = text(body.get("incidentId"), 160)
    status = text(body.get("status"), 32).lower()
    status = status if status in STATUSES else "all"
    severity = text(body.get("severity"), 16).lower()
    severity = severity if severity in SEVERITIES else ""
    exact = {k: text(body.get(k), 1024) for k in EXACT_FILTERS if text(body.get(k), 1024)}
    limit = clamp_int(body.get("limit"), 1, 200, 60)
    filtered = status != "all" or bool(severity) or bool(exact)

    pinned = [r for r in records if pin and r["incidentId"] == pin]
    visible = [r for r in records if _in_window(r, window) and all(r.get(k) == v for k, v in exact.items())]
    rows: list[dict] = []
    if not pin or filtered:
        for record in visible:
            if pin and record["incidentId"] == pin:
                continue
            if status != "all" and record.get("status") != status:
                continue
            if severity and record.get("severity") != severity:
                continue
            rows.append(record)
    rows.sort(key=_sort_key)
    result = pinned + rows
    summary = {s: sum(1 for r in visible if r.get("status") == s) for s in STATUSES}
    return {"items": [incident_item(r) for r in result[:limit]], "total": len(result), "summary": summary,
            "updateTime": display_time(now or now_ms())}


async def list_incidents(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(query_incidents(request.app[SERVICES].ops, body))


async def update_incident(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    book = getattr(request.app[SERVICES].ops, "incidents", None)
    status = text(body.get("status"), 32).lower()
    record = None
    if book is not None:
        record = book.update(request.match_info["incident_id"], status=status if status in STATUSES else None,
                             owner=body.get("owner") if "owner" in body else None,
                             note=body.get("note") if "note" in body else None, actor=actor_from(request))
    if record is None:
        raise ApiError(404, "incident not found")
    return ok(incident_item(record))


ROUTES = [
    web.post("/security-center/incidents/list", list_incidents),
    web.put("/security-center/incidents/{incident_id}", update_incident),
]
