"""Helpers for the tests that prove a webhook URL or HMAC key never reaches the store: every row of
every table as text (to search for canaries), a webhook receiver on 127.0.0.1, and the signature
check of a delivery (SPEC §17 `X-AnySentry-Signature`)."""

from __future__ import annotations

import hashlib
import hmac
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


def raw_rows(store, database: str | None = None) -> str:
    """Every row of every table of the database (the store's by default), every version, as text."""
    database = database or store.database
    dump = []
    for (table,) in store.query_rows("SELECT name FROM system.tables WHERE database = {db:String}", {"db": database}):
        dump.append(repr(store.query_rows(f"SELECT * FROM `{database}`.`{table}`")))
    return "\n".join(dump)


def signed_by(key: str, headers: dict, body: bytes) -> bool:
    expected = "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("X-AnySentry-Signature", ""), expected)


@dataclass
class WebhookReceiver:
    port: int = 0
    received: list[tuple[str, dict, bytes]] = field(default_factory=list)  # (path, headers, body) per POST


@asynccontextmanager
async def webhook_receiver():
    """A webhook receiver listening on 127.0.0.1 that records every POST."""
    receiver = WebhookReceiver()

    async def hook(request: web.Request) -> web.Response:
        receiver.received.append((request.path, dict(request.headers), await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = site._server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        await runner.cleanup()
