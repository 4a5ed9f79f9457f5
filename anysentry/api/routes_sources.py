"""Sources, ingest tokens, check-ins and collector heartbeats/health (SPEC §22, §23)."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES, management
from anysentry.api.auth import actor_from
from anysentry.api.http import ApiError, clamp_int, ok, read_object, text, truthy
from anysentry.api.pipeline import credentials
from anysentry.events.timefmt import display_time, iso_time, now_ms
from anysentry.ops.collectors import heartbeat_answer
from anysentry.store.window import TimeWindow

STATUSES = ("active", "stale", "unused", "disabled")


def _hidden_verification(record: dict) -> bool:
    return record.get("name", "").lower().startswith("verify") or record.get("sourceId", "").startswith("src_verify_")


async def list_sources(request: web.Request) -> web.Response:
    body = await read_object(request)
    services = request.app[SERVICES]
    registry = services.sources
    now = now_ms()
    pinned_id = text(body.get("sourceId"))
    status = text(body.get("status")) or "all"
    kind = text(body.get("type"))
    q = text(body.get("q")).lower()
    collector = text(body.get("collectorId"))
    workspace = text(body.get("workspacePath"), 1024)
    include_verification = truthy(body.get("includeVerification"))
    limit = clamp_int(body.get("limit"), 1, 500, 100)
    only_pins = bool(pinned_id) and not any((status != "all", kind, q, collector, workspace))
    items, pinned = [], []
    for record in registry.all():
        item = registry.item(record, now)
        if pinned_id and record["sourceId"] == pinned_id:
            pinned.append(item)
            continue
        if only_pins:
            continue
        if _hidden_verification(record) and not include_verification:
            continue
        if status in STATUSES and item["status"] != status:
            continue
        if kind and record.get("type") != kind:
            continue
        if collector and record.get("collectorId") != collector:
            continue
        if workspace and record.get("workspacePath") != workspace:
            continue
        if q and q not in " ".join(str(record.get(k, "")) for k in ("sourceId", "name", "type", "collectorId", "workspacePath", "owner", "team", "note")).lower():
            continue
        items.append(item)
    items.sort(key=lambda i: (i["status"] != "active", i.get("name", "")))
    everything = [registry.item(r, now) for r in registry.all()]
    summary = {
        "totalSources": len(everything),
        "enabledSources": sum(1 for i in everything if i.get("enabled")),
        "protectedSources": sum(1 for i in everything if i.get("requireToken")),
        "activeSources": sum(1 for i in everything if i["status"] == "active"),
        "staleSources": sum(1 for i in everything if i["status"] == "stale"),
        "unusedSources": sum(1 for i in everything if i["status"] == "unused"),
        "disabledSources": sum(1 for i in everything if i["status"] == "disabled"),
        "discoveredSources": sum(1 for i in everything if i.get("discovered")),
        "tokenRotationOverdueSources": sum(1 for i in everything if i["tokenRotationStatus"] == "overdue"),
        "rejectedEvents": sum(int(i.get("rejectedEvents") or 0) for i in everything),
    }
    result = (pinned + items)[:limit]
    return ok({"items": result, "total": len(pinned) + len(items), "summary": summary, "updateTime": display_time(now_ms())})


def _audit(request: web.Request, action: str, record: dict, summary: str) -> None:
    request.app[SERVICES].audit.record(action, "source", record["sourceId"], summary, actor=actor_from(request),
                                       details={"sourceId": record["sourceId"], "name": record.get("name")})


async def create_source(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    registry = request.app[SERVICES].sources
    record, token = registry.create(body)
    _audit(request, "source.updated", record, f"source {record['name']} created")
    return ok({"source": registry.item(record), "token": token}, status=201)


async def update_source(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    registry = request.app[SERVICES].sources
    source_id = request.match_info["source_id"].strip()[:160]
    record = registry.upsert(source_id, body)
    _audit(request, "source.updated", record, f"source {record['name']} updated")
    return ok({"source": registry.item(record)})


async def rotate_token(request: web.Request) -> web.Response:
    management(request)
    registry = request.app[SERVICES].sources
    rotated = registry.rotate(request.match_info["source_id"])
    if rotated is None:
        raise ApiError(404, "source not found")
    record, token = rotated
    _audit(request, "source.token_rotated", record, f"token of source {record['name']} rotated")
    return ok({"source": registry.item(record), "token": token}, status=201)


async def check_in(request: web.Request) -> web.Response:
    body = await read_object(request)
    services = request.app[SERVICES]
    resolution = services.sources.resolve(credentials(body, request.headers), default_type=text(body.get("sourceType")) or "custom")
    source_id = resolution.source["sourceId"] if resolution.source else None
    received = now_ms()
    if resolution.rejection:
        return ok({"accepted": False, "sourceId": source_id, "receivedAt": iso_time(received), "reason": resolution.rejection}, status=201)
    status = "error" if text(body.get("status")).lower() == "error" else "ok"
    if resolution.source is not None:
        record = resolution.source
        record["lastCheckInStatus"] = status
        record["lastCheckInMessage"] = text(body.get("message"), 500)
        if status == "ok":
            services.sources.record_accepted(record, heartbeats=1, at=received)
        else:
            services.sources.record_check_in_error(record, text(body.get("message"), 500) or "check-in reported error")
    for listener in services.check_in_listeners:
        listener(resolution.source, body, status)
    return ok({"accepted": True, "sourceId": source_id, "receivedAt": iso_time(received)}, status=201)


async def heartbeat(request: web.Request) -> web.Response:
    body = await read_object(request)
    services = request.app[SERVICES]
    creds = credentials(body, request.headers)
    resolution = services.sources.resolve(creds, default_type=text(body.get("sourceType")) or "forwarder")
    source_id = resolution.source["sourceId"] if resolution.source else None
    if resolution.rejection:
        return ok({"accepted": False, "collectorId": text(body.get("collectorId")) or None, "sourceId": source_id,
                   "receivedAt": iso_time(), "reason": resolution.rejection}, status=201)
    hb = services.collectors.record({**body, "sourceId": source_id or ""})
    services.metrics.heartbeats.inc()
    services.sources.record_accepted(resolution.source, heartbeats=1, at=hb["receivedAt"])
    return ok(heartbeat_answer(hb, source_id), status=201)


async def collector_health(request: web.Request) -> web.Response:
    body = await read_object(request)
    services = request.app[SERVICES]
    window = TimeWindow.from_body(body)
    now = now_ms()
    registry = services.collectors
    counts = registry.window_counts(window.start, window.end)
    stats = await services.queries.collector_stats(window) if getattr(services, "queries", None) else {}
    wanted_state = text(body.get("state"))
    pinned_id = text(body.get("collectorId"))
    node = text(body.get("nodeName"))
    q = text(body.get("q")).lower()
    limit = clamp_int(body.get("limit"), 1, 500, 100)
    minutes = window.span / 60_000
    items, pinned = [], []
    for cid, hb in registry.latest.items():
        item = registry.item(hb, now, counts.get(cid, {}), stats.get(cid), minutes)
        if pinned_id and cid == pinned_id:
            pinned.append(item)
            continue
        if pinned_id and not (wanted_state or node or q):
            continue
        if wanted_state and wanted_state != "all" and item["state"] != wanted_state:
            continue
        if node and hb.get("nodeName") != node:
            continue
        if q and q not in f"{cid} {hb.get('nodeName', '')} {hb.get('podName', '')} {hb.get('namespace', '')}".lower():
            continue
        items.append(item)
    order = {"down": 0, "stale": 1, "degraded": 2, "quiet": 3, "healthy": 4}
    items.sort(key=lambda i: (order[i["state"]], i["collectorId"]))
    everything = [registry.item(hb, now, counts.get(c, {}), stats.get(c), minutes) for c, hb in registry.latest.items()]
    summary = {f"{state}Collectors": sum(1 for i in everything if i["state"] == state) for state in order}
    summary.update({
        "totalCollectors": len(everything),
        "collectorsWithHeartbeat": len(everything),
        "observedEventCount": sum(i["eventCount"] for i in everything),
        "observedAgentCount": sum(i["observedAgentCount"] for i in everything),
    })
    result = pinned + items
    return ok({"items": result[:limit], "total": len(result), "summary": summary, "updateTime": display_time(now_ms())})


ROUTES = [
    web.post("/security-center/sources/list", list_sources),
    web.post("/security-center/sources", create_source),
    web.put("/security-center/sources/{source_id}", update_source),
    web.post("/security-center/sources/{source_id}/rotate-token", rotate_token),
    web.post("/security-center/sources/check-in", check_in),
    web.post("/security-center/collectors/heartbeat", heartbeat),
    web.post("/security-center/collectors/health", collector_health),
]
