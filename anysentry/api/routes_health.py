"""Liveness, readiness and metrics (SPEC §28.1): health stays `ok` while the store is away (events
wait in the durable buffer) and says so; readiness turns false only when that buffer is full
(95%, or refusing the batches producers send)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from anysentry.api.app import SERVICES
from anysentry.api.http import ok, raw_json
from anysentry.events.timefmt import iso_time

COUNTS_TTL_SECS = 5.0


async def _event_counts(services) -> dict:
    cached = getattr(services, "_health_counts", None)
    if cached and time.monotonic() - cached[0] < COUNTS_TTL_SECS:
        return cached[1]
    counts = {"total": 0, "distinctAgents": 0, "distinctSessions": 0}
    if services.writer.store_ready:
        try:
            rows = await asyncio.wait_for(services.store.aquery_rows(
                f"SELECT uniqExact(eventId), uniqExact(agentId), uniqExact(sessionId) FROM {services.store.events_table}"), 5)
            counts = {"total": int(rows[0][0]), "distinctAgents": int(rows[0][1]), "distinctSessions": int(rows[0][2])}
        except Exception:
            pass
    services._health_counts = (time.monotonic(), counts)
    return counts


def buffer_full(services) -> bool:
    """Nearly full, or refusing what producers send (a batch may be larger than what is left)."""
    wal = services.writer.wal
    return wal.pending_bytes >= wal.max_bytes * 0.95 or wal.refusing


async def healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    stats = services.writer.stats()
    tiers = services.policy.tier_status() if hasattr(services.policy, "tier_status") else {"l1": True, "l2": False, "l3": False}
    return ok({
        "schemaVersion": "anysentry.health.v1",
        "status": "ok",
        "service": "anysentry-api",
        "uptimeSeconds": round(time.time() - services.started_at, 3),
        "timestamp": iso_time(),
        "storage": {"mode": services.store.mode, "clickhouseConfigured": services.store.configured,
                    "clickhouseReady": stats.store_ready, "bufferedEvents": stats.buffered_events,
                    "bufferedBytes": stats.buffered_bytes, "bufferFull": buffer_full(services),
                    "lastError": stats.last_error or None},
        "managementAuth": {"enabled": services.auth.enabled},
        "events": await _event_counts(services),
        "policy": tiers,
        "streaming": {"enabled": False, "findings": 0},
        "supplyChain": {"enabled": False},
    })


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if buffer_full(services):
        return raw_json({"ready": False, "reason": "durable ingest buffer is full"}, status=503)
    return raw_json({"ready": True, "storeReady": services.writer.store_ready})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICES].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


ROUTES = [
    web.get("/security-center/healthz", healthz),
    web.get("/security-center/readyz", readyz),
    web.get("/healthz", healthz),
    web.get("/readyz", readyz),
    web.get("/metrics", metrics),
    web.get("/security-center/metrics", metrics),
]
