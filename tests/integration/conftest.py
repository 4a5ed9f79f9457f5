"""A real API server listening on 127.0.0.1 over the session's chdb path, one database per test.

`api` is an `ApiClient` for an open server; `make_api(...)` starts one with options (admin token,
buffer size, policy, ...). Both tear down the server and drop the database afterwards."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from anysentry.api.app import ApiSettings, build_app
from anysentry.api.auth import ManagementAuth
from anysentry.api.services import Services
from anysentry.store.settings import StoreSettings

BASE = "/security-center"


class ApiClient:
    def __init__(self, session: aiohttp.ClientSession, services: Services, port: int, headers: dict):
        self.session = session
        self.services = services
        self.port = port
        self.headers = headers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def request(self, method: str, path: str, *, json=None, data=None, headers=None, root: bool = False):
        """(status, parsed JSON body or text); paths are relative to /security-center unless `root`."""
        url = path if root else BASE + path
        merged = {**self.headers, **(headers or {})}
        async with self.session.request(method, url, json=json, data=data, headers=merged) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def post(self, path: str, json=None, **kw):
        return await self.request("POST", path, json=json, **kw)

    async def put(self, path: str, json=None, **kw):
        return await self.request("PUT", path, json=json, **kw)

    async def get(self, path: str, **kw):
        return await self.request("GET", path, **kw)

    async def data(self, method: str, path: str, json=None, *, expect: int | tuple = (200, 201), **kw):
        """The unwrapped `data` of a successful call; asserts the status."""
        status, body = await self.request(method, path, json=json, **kw)
        expected = (expect,) if isinstance(expect, int) else expect
        assert status in expected, (status, body)
        assert body["code"] == 200 and body["message"] == "Success", body
        return body["data"]

    async def sync(self) -> None:
        """Wait until everything accepted so far is in the store (read-your-writes in tests)."""
        assert await self.services.writer.sync()


@pytest.fixture
async def make_api(tmp_path, chdb_path, store_database):
    started: list = []

    async def start(*, admin_token: str | None = None, database: str | None = None, data_dir=None,
                    headers: dict | None = None, configure=None, operations: str = "local",
                    max_body_bytes: int | None = None, ingest_workers: int = 0, public_base_path: str = "",
                    **store_overrides) -> ApiClient:
        settings = StoreSettings(data_dir=str(data_dir or tmp_path / f"data{len(started)}"), chdb_dir=chdb_path,
                                 database=database or store_database, flush_interval=0.05, **store_overrides)
        services = Services(store_settings=settings, auth=ManagementAuth(admin_token), state_flush_secs=0.2,
                            operations=operations, state_refresh_secs=0.2)
        if configure is not None:
            configure(services)
        limits = {} if max_body_bytes is None else {"max_body_bytes": max_body_bytes}
        app = build_app(services, ApiSettings(host="127.0.0.1", port=0, data_dir=tmp_path, ingest_workers=ingest_workers,
                                              public_base_path=public_base_path, **limits))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        session = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}")
        client = ApiClient(session, services, port, headers or {})
        started.append((runner, session, client))
        return client

    yield start
    for runner, session, client in reversed(started):
        await session.close()
        await runner.cleanup()
    if started:
        store = started[0][2].services.store
        for database in {client.services.store.database for _, _, client in started}:
            try:
                store.command(f"DROP DATABASE IF EXISTS `{database}` SYNC")
            except Exception:
                pass


@pytest.fixture
async def api(make_api) -> ApiClient:
    return await make_api()
