"""Alerts (SPEC §16): the list with filters, pinning, summary and rules; the management update; config."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES, management
from anysentry.api.auth import actor_from
from anysentry.api.http import ApiError, clamp_int, ok, read_object, text
from anysentry.events.timefmt import display_time, now_ms
from anysentry.judge.decision import SEVERITIES, severity_rank
from anysentry.ops.alerts import ACTIVE, KINDS, STATUS_ORDER, STATUSES, AlertSettings, alert_item, rules
from anysentry.ops.notifications import Notifier
from anysentry.store.window import TimeWindow

PIN_KEYS = ("alertId", "incidentId", "eventId", "taskId", "objectiveId", "issueId")
EXACT_FILTERS = ("workspacePath", "agentId", "collectorId", "sourceId")
KIND_COUNTS = {"incidentAlerts": "incident", "collectorAlerts": "collector", "agentAlerts": "agent",
               "eventAlerts": "event", "sourceAlerts": "source", "coverageAlerts": "coverage",
               "objectiveAlerts": "objective", "remediationAlerts": "remediation"}


def _linked(record: dict, key: str) -> str:
    return str(record.get(key) or (record.get("labels") or {}).get(key) or "")


def _in_window(record: dict, window: TimeWindow) -> bool:
    """Active alerts stay visible whatever their age; resolved ones while seen or changed in the window."""
    if (record.get("firstSeenAt") or 0) > window.end:
        return False
    if record.get("status") in ACTIVE:
        return True
    return max(record.get("lastSeenAt") or 0, record.get("updatedAt") or 0) >= window.start


def _agent_scoped(engine, record: dict) -> bool:
    if record.get("monitored") or record.get("agentScopeId"):
        return True
    has_metadata = getattr(engine, "has_agent_metadata", None)
    if callable(has_metadata) and record.get("agentId"):
        try:
            return bool(has_metadata(record.get("workspacePath", ""), record["agentId"]))
        except Exception:
            return False
    return False


def _sort_key(record: dict) -> tuple:
    return (STATUS_ORDER.get(record.get("status"), 9), -severity_rank(record.get("severity", "info")),
            -(record.get("lastSeenAt") or 0))


def _summary(rows: list[dict]) -> dict:
    summary = {
        "totalAlerts": len(rows),
        "activeAlerts": sum(1 for r in rows if r.get("status") in ACTIVE),
        "openAlerts": sum(1 for r in rows if r.get("status") == "open"),
        "acknowledgedAlerts": sum(1 for r in rows if r.get("status") == "acknowledged"),
        "silencedAlerts": sum(1 for r in rows if r.get("status") == "silenced"),
        "resolvedAlerts": sum(1 for r in rows if r.get("status") == "resolved"),
        "criticalAlerts": sum(1 for r in rows if r.get("severity") == "critical" and r.get("status") in ACTIVE),
        "highAlerts": sum(1 for r in rows if r.get("severity") == "high" and r.get("status") in ACTIVE),
    }
    for name, kind in KIND_COUNTS.items():
        summary[name] = sum(1 for r in rows if r.get("kind") == kind)
    return summary


def _webhook_configured(engine, settings) -> bool:
    notifier = getattr(engine, "notifications", None)
    if notifier is not None and hasattr(notifier, "webhook_configured"):
        return bool(notifier.webhook_configured())
    return bool(getattr(settings, "webhook_url", ""))


def query_alerts(engine, body: dict, now: int | None = None) -> dict:
    """`POST /alerts/list` as data (also usable by capabilities and evidence)."""
    book = getattr(engine, "alerts", None)
    settings = getattr(book, "settings", None) or AlertSettings.from_env(engine)
    records = book.values() if book is not None else []
    window = TimeWindow.from_body(body, now=now)
    pins = {k: text(body.get(k), 512) for k in PIN_KEYS if text(body.get(k), 512)}
    status = text(body.get("status"), 32).lower()
    status = status if status in STATUSES or status == "active" else "all"
    severity = text(body.get("severity"), 16).lower()
    severity = severity if severity in SEVERITIES else ""
    kind = text(body.get("kind"), 32).lower()
    kind = kind if kind in KINDS else ""
    q = text(body.get("q"), 200).lower()
    exact = {k: text(body.get(k), 1024) for k in EXACT_FILTERS if text(body.get(k), 1024)}
    agent_scope = text(body.get("scope"), 16).lower() == "agent"
    limit = clamp_int(body.get("limit"), 1, 500, 120)
    filtered = status != "all" or bool(severity or kind or q or exact)

    pinned = [r for r in records if pins and any(_linked(r, k) == v for k, v in pins.items())]
    pinned_ids = {r["alertId"] for r in pinned}
    visible = [r for r in records if _in_window(r, window) and (not agent_scope or _agent_scoped(engine, r))]
    rows: list[dict] = []
    if not pins or filtered:
        for record in visible:
            if record["alertId"] in pinned_ids:
                continue
            if status == "active" and record.get("status") not in ACTIVE:
                continue
            if status in STATUSES and record.get("status") != status:
                continue
            if severity and record.get("severity") != severity:
                continue
            if kind and record.get("kind") != kind:
                continue
            if any((record.get(k) or "") != v for k, v in exact.items()):
                continue
            if q and q not in Notifier.alert_text(record) + " " + str(record.get("ruleId", "")).lower():
                continue
            rows.append(record)
    pinned.sort(key=_sort_key)
    rows.sort(key=_sort_key)
    result = pinned + rows
    return {"items": [alert_item(r) for r in result[:limit]], "total": len(result), "summary": _summary(visible),
            "rules": rules(settings), "webhookConfigured": _webhook_configured(engine, settings),
            "updateTime": display_time(now or now_ms())}


async def list_alerts(request: web.Request) -> web.Response:
    body = await read_object(request)
    return ok(query_alerts(request.app[SERVICES].ops, body))


async def update_alert(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    book = getattr(request.app[SERVICES].ops, "alerts", None)
    status = text(body.get("status"), 32).lower()
    record = None
    if book is not None:
        record = book.update(request.match_info["alert_id"], status=status if status in STATUSES else None,
                             owner=body.get("owner") if "owner" in body else None,
                             note=body.get("note") if "note" in body else None,
                             silence_minutes=body.get("silenceMinutes"), actor=actor_from(request))
    if record is None:
        raise ApiError(404, "alert not found")
    return ok(alert_item(record))


async def alert_config(request: web.Request) -> web.Response:
    engine = request.app[SERVICES].ops
    settings = getattr(getattr(engine, "alerts", None), "settings", None) or AlertSettings.from_env(engine)
    return ok(settings.config(_webhook_configured(engine, settings)))


ROUTES = [
    web.post("/security-center/alerts/list", list_alerts),
    web.get("/security-center/alerts/config", alert_config),
    web.put("/security-center/alerts/{alert_id}", update_alert),
]
