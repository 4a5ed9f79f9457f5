"""The aiohttp application: middleware, the shared services, lifecycle and route registration.

Route modules (ingest, sources, collectors, queries, config, health, ...) each expose
`ROUTES: list[aiohttp.web.RouteDef]` with plain handler functions that read `request.app[SERVICES]`."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from anysentry.api.auth import ManagementAuth
from anysentry.api.http import ApiError, error_response
from anysentry.api.services import Services

log = logging.getLogger("anysentry.api")
API_BASE = "/security-center"
DEFAULT_PORT = 29653
SERVICES = web.AppKey("services", Services)
SETTINGS = web.AppKey("settings", object)


@dataclass(frozen=True)
class ApiSettings:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    public_base_path: str = ""
    max_body_bytes: int = 8 * 1024 * 1024
    data_dir: Path = field(default_factory=lambda: Path(".anysentry").resolve())
    state_flush_secs: float = 2.0

    @classmethod
    def from_env(cls, **overrides) -> "ApiSettings":
        values = {
            "port": int(os.environ.get("PORT", DEFAULT_PORT)),
            "public_base_path": os.environ.get("PUBLIC_BASE_PATH", "").rstrip("/"),
            "max_body_bytes": int(os.environ.get("ANYSENTRY_MAX_BODY_BYTES", 8 * 1024 * 1024)),
            "data_dir": Path(os.environ.get("ANYSENTRY_DATA_DIR", ".anysentry")).resolve(),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@web.middleware
async def errors_middleware(request: web.Request, handler):
    """Client errors as `{statusCode, message, error}`; unexpected failures as a bare 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        request.app[SERVICES].metrics.http_errors.labels(str(exc.status)).inc()
        return error_response(exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status >= 400:
            message = {404: "route not found", 405: "method not allowed", 413: "request body too large"}.get(exc.status, exc.reason)
            return error_response(exc.status, message, {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None)
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error")


CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, X-AnySentry-Admin-Token, X-AnySentry-Management-Token, "
                                    "X-AnySentry-Ingest-Token, X-AnySentry-Source-Id, X-AnySentry-Actor",
}


@web.middleware
async def cors_middleware(request: web.Request, handler):
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=CORS_HEADERS)
    response = await handler(request)
    response.headers.update(CORS_HEADERS)
    return response


ROUTE_MODULES = ("ingest", "sources", "health", "config", "events", "incidents", "alerts", "notifications",
                 "objectives", "maintenance", "coverage", "remediations", "inventory", "evidence", "audit",
                 "capabilities", "models")


def route_modules() -> list:
    """Every `anysentry.api.routes_<area>` module present (areas land one by one)."""
    modules = []
    for area in ROUTE_MODULES:
        name = f"anysentry.api.routes_{area}"
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules


def build_app(services: Services, settings: ApiSettings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[cors_middleware, errors_middleware])
    app[SERVICES] = services
    app[SETTINGS] = settings
    for module in route_modules():
        app.add_routes(module.ROUTES)
    app.on_startup.append(_startup)
    app.on_cleanup.append(_cleanup)
    if settings.public_base_path:
        root = web.Application(client_max_size=settings.max_body_bytes)
        root.add_subapp(settings.public_base_path, app)
        return root
    return app


async def _startup(app: web.Application) -> None:
    await app[SERVICES].start()


async def _cleanup(app: web.Application) -> None:
    await app[SERVICES].stop()


def management(request: web.Request) -> None:
    request.app[SERVICES].auth.require(request)


def publish_resource(request: web.Request, kind: str, record: dict) -> None:
    """In a cluster a REST change is also written as a resource, so kubectl and GitOps see it."""
    mirror = getattr(request.app[SERVICES], "mirror", None)
    if mirror is not None:
        mirror.publish(kind, record)


__all__ = ["ApiSettings", "ManagementAuth", "SERVICES", "API_BASE", "build_app", "management"]
