"""Run an aiohttp application until SIGINT/SIGTERM, with background tasks bound to its lifetime."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web

log = logging.getLogger("anysentry")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def serve_app(app: web.Application, host: str, port: int, *, banner: str = "") -> None:
    # background threads (store inserts, fsyncs) hand the GIL back to the event loop sooner: a
    # shorter switch interval keeps request latency tails close to the median
    sys.setswitchinterval(0.0005)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    # what start-up built (state, compiled rules, imported modules) lives as long as the process:
    # keep it out of every collection, and collect less often, so a full collection never stalls
    # requests for tens of milliseconds
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)
    log.info("%slistening on http://%s:%d/security-center", banner, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # pragma: no cover - non-Unix
            pass
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
