"""The audit log (SPEC §25): `POST /audit/list`, read-only and never management-gated."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES
from anysentry.api.http import clamp_int, ok, read_object, text
from anysentry.events.timefmt import display_time, now_ms
from anysentry.ops.audit import AuditLog
from anysentry.store.window import TimeWindow

SELECTORS = ("resourceType", "resourceId", "actorId")
ACTION_GROUPS = {"policyActions": "policy.", "agentActions": "agent.", "maintenanceActions": "maintenance.",
                 "notificationActions": "notification.", "objectiveActions": "objective.", "sourceActions": "source.",
                 "incidentActions": "incident.", "alertActions": "alert.", "remediationActions": "remediation."}


def _searchable(record: dict) -> str:
    actor = record.get("actor") or {}
    return " ".join(str(v) for v in (record.get("auditId"), record.get("action"), record.get("resourceType"),
                                     record.get("resourceId"), record.get("summary"), record.get("result"),
                                     actor.get("id"), actor.get("displayName"))).lower()


def summary(records: list[dict]) -> dict:
    out = {"totalRecords": len(records)}
    for name, prefix in ACTION_GROUPS.items():
        out[name] = sum(1 for r in records if str(r.get("action", "")).startswith(prefix))
    out["failureActions"] = sum(1 for r in records if r.get("result") == "failure")
    return out


def query_audit(audit: AuditLog, body: dict, now: int | None = None) -> dict:
    """Filters (`action`, `q`), exact selectors (`resourceType`, `resourceId`, `actorId`) and the
    `auditId` pin (§3.6). Selectors alone ignore the time window; pinned rows come first."""
    now = now or now_ms()
    window = TimeWindow.from_body(body, now=now)
    pin = text(body.get("auditId"), 64)
    exact = {k: text(body.get(k), 1024) for k in SELECTORS if text(body.get(k), 1024)}
    action = text(body.get("action"), 120)
    q = text(body.get("q"), 200).lower()
    limit = clamp_int(body.get("limit"), 1, 500, 150)
    selectors_only = bool(pin or exact) and not (action or q)
    records = list(reversed(audit.records))  # newest first; equal times keep their recording order
    pinned = [r for r in records if pin and r.get("auditId") == pin]
    visible = [r for r in records if window.start <= int(r.get("at") or 0) <= window.end]
    rows = []
    for record in (records if selectors_only else visible):
        if pin and record.get("auditId") == pin:
            continue
        if selectors_only and not exact:
            continue  # only the pin was asked for
        if exact.get("resourceType") and record.get("resourceType") != exact["resourceType"]:
            continue
        if exact.get("resourceId") and record.get("resourceId") != exact["resourceId"]:
            continue
        if exact.get("actorId") and (record.get("actor") or {}).get("id") != exact["actorId"]:
            continue
        if action and record.get("action") != action:
            continue
        if q and q not in _searchable(record):
            continue
        rows.append(record)
    rows.sort(key=lambda r: -(r.get("at") or 0))
    result = pinned + rows
    return {"items": [AuditLog.item(r) for r in result[:limit]], "total": len(result), "summary": summary(visible),
            "updateTime": display_time(now)}


async def list_audit(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(query_audit(request.app[SERVICES].audit, body))


ROUTES = [web.post("/security-center/audit/list", list_audit)]
