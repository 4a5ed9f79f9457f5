"""Event reads over HTTP: list, timeline, stats, the dashboard aggregates and the live
agent-observability stream (SPEC §14, §28.2, §28.3).

Handlers are thin: read the body (sanitised by `EventQuery`, never rejected), bring accepted events
into the store (`writer.sync()`, read-your-writes; a store that is down just answers from what is
stored), run the query in a thread, wrap it. A query that fails because the store is unreachable
answers 503 `store unavailable`."""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web

from anysentry.api.app import SERVICES
from anysentry.api.http import ApiError, ok, read_object
from anysentry.store.queries import EventQueries

log = logging.getLogger(__name__)

BASE = "/security-center"
SSE_INTERVAL_SECS = 3.0  # §28.3; an app may set its own with app[SSE_INTERVAL] (tests shorten it)
SSE_INTERVAL = web.AppKey("sse_interval", float)
SYNC_TIMEOUT_SECS = 5.0
SHUTDOWN_POLL_SECS = 0.25

AGGREGATE_PATHS = {
    "/top/healthCard": "healthCard",
    "/top/explainabilityScan": "explainabilityScan",
    "/top/performanceCard": "performanceCard",
    "/risks/summary": "riskSummary",
    "/risks/breakdown": "riskBreakdown",
    "/sessions/highestRisk": "highestRisk",
    "/sessions/decisionFunnel": "decisionFunnel",
    "/sessions/agentObservability": "agentObservability",
    "/sessions/workspaceRiskDistribution": "workspaceRiskDistribution",
}


def _queries(services) -> EventQueries:
    queries = getattr(services, "queries", None)
    if queries is None:  # services built before EventQueries was wired
        queries = services.queries = EventQueries(services.store)
    return queries


async def _sync(services) -> None:
    """Read-your-writes: flush accepted events into the store first; never fails the read."""
    try:
        # shielded: a slow flush goes on in the background instead of being cut mid-insert
        await asyncio.wait_for(asyncio.shield(services.writer.sync()), SYNC_TIMEOUT_SECS)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # store down or slow: answer from what is stored
        log.debug("writer sync before read failed: %s", exc)


async def _run(services, method: str, *args, **kwargs):
    try:
        return await getattr(_queries(services), method)(*args, **kwargs)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("event query %s failed: %s", method, exc)
        raise ApiError(503, "store unavailable") from exc


async def list_events(request: web.Request) -> web.Response:
    body = await read_object(request)
    services = request.app[SERVICES]
    await _sync(services)
    return ok(await _run(services, "alist_events", body))


async def timeline(request: web.Request) -> web.Response:
    body = await read_object(request)
    services = request.app[SERVICES]
    await _sync(services)
    return ok(await _run(services, "atimeline", body))


async def stats(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await _sync(services)
    return ok(await _run(services, "astats", dict(request.query)))


def _observability_context(services) -> dict:
    """What the store cannot know: collector heartbeats, buffer fill, store health."""
    from anysentry.api.routes_health import buffer_full

    latest = getattr(getattr(services, "collectors", None), "latest", {}) or {}
    heartbeat_ok = None
    if latest:
        registry = services.collectors
        from anysentry.events.timefmt import now_ms

        now = now_ms()
        heartbeat_ok = any((now - hb["receivedAt"]) / 1000 < registry.settings.stale_after_secs for hb in latest.values())
    wal = services.writer.wal
    util = 100.0 * wal.pending_bytes / wal.max_bytes if wal.max_bytes else 0.0
    return {"heartbeat_ok": heartbeat_ok, "resource_util": util,
            "infra_healthy": bool(services.writer.store_ready) and not buffer_full(services)}


def aggregate_handler(name: str):
    async def handler(request: web.Request) -> web.Response:
        body = await read_object(request)
        services = request.app[SERVICES]
        await _sync(services)
        extra = _observability_context(services) if name == "agentObservability" else {}
        return ok(await _run(services, "aaggregate", name, body, **extra))

    handler.__name__ = f"aggregate_{name}"
    return handler


async def observability_stream(request: web.Request) -> web.StreamResponse:
    """§28.3: one `AgentObservability` frame at once, then one every interval, until the client
    goes away or the app shuts down. Unwrapped; a failed query skips a frame, it does not end the
    stream."""
    services = request.app[SERVICES]
    body = {key: value for key, value in request.query.items()}
    interval = float(request.app.get(SSE_INTERVAL) or request.app.get("sse_interval") or SSE_INTERVAL_SECS)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "Connection": "keep-alive", "X-Accel-Buffering": "no"})
    response.headers.update({"Access-Control-Allow-Origin": "*"})
    await response.prepare(request)
    frame = 0
    try:
        while not _closing(request):
            await _sync(services)
            try:
                data = await _queries(services).aaggregate("agentObservability", body, **_observability_context(services))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("observability stream query failed: %s", exc)
                data = None
            if data is not None:
                frame += 1
                await response.write(b"id: %d\ndata: %s\n\n" % (frame, orjson.dumps(data)))
            waited = 0.0
            while waited < interval and not _closing(request):
                step = min(SHUTDOWN_POLL_SECS, interval - waited)
                await asyncio.sleep(step)
                waited += step
    except ConnectionResetError:  # the client went away (aiohttp's ClientConnectionResetError too)
        pass
    return response


def _closing(request: web.Request) -> bool:
    """The server is shutting down: aiohttp's `pre_shutdown` marks every connection closing before
    it waits for running handlers, so a stream ends at once instead of holding shutdown up."""
    protocol = request.protocol
    return protocol is None or bool(getattr(protocol, "_close", False) or getattr(protocol, "_force_close", False))


ROUTES = [
    web.post(f"{BASE}/events/list", list_events),
    web.post(f"{BASE}/events/timeline", timeline),
    web.get(f"{BASE}/stats", stats),
    web.get(f"{BASE}/sessions/agentObservability/stream", observability_stream),
    *(web.post(f"{BASE}{path}", aggregate_handler(name)) for path, name in AGGREGATE_PATHS.items()),
]
