"""GET /healthz on the collector's health port (the DaemonSet's liveness and readiness probe).

200 while every loop runs — `status: ok`, or `degraded` with the reason when the api has been
unreachable (or refusing the token) for long or events had to be dropped; a restart would not fix
either, and the disk buffer keeps the data meanwhile. 503 (`status: error`) only when a loop has
died or stalled, which a restart does fix."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from anysentry.collector.buffer import DiskBuffer
from anysentry.collector.settings import CollectorSettings
from anysentry.collector.stats import CollectorStats


def health_app(settings: CollectorSettings, stats: CollectorStats, buffer: DiskBuffer,
               dead_loops: Callable[[], list[str]]) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        broken = sorted(set(dead_loops()) | set(stats.stalled()))
        status, message = stats.status()
        if broken:
            status, message = "error", f"not running: {', '.join(broken)}"
        body = {
            "status": status, "message": message, "collectorId": settings.collector_id,
            "nodeName": settings.node_name, "mode": settings.mode,
            "uptimeSeconds": int(time.monotonic() - stats.started),
            "bufferDepth": buffer.pending_items, "bufferBytes": buffer.pending_bytes,
            "apiUnreachableSeconds": int(stats.api_unreachable_for()),
            "lastApiError": stats.last_api_error or None,
            "counts": stats.counts(),
        }
        return web.json_response(body, status=503 if broken else 200)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app
