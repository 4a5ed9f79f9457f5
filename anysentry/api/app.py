"""The aiohttp application: middleware, the shared services, lifecycle and route registration.

Route modules (ingest, sources, collectors, queries, config, health, ...) each expose
`ROUTES: list[aiohttp.web.RouteDef]` with plain handler functions that read `request.app[SERVICES]`.

Public base path (SPEC §3.1 `PUBLIC_BASE_PATH`): behind an ingress at a sub-path that passes the path
on unchanged, requests arrive as `<prefix>/security-center/...`; the prefix is stripped before routing.
In-cluster clients (the ui Deployment, node collectors, the operator) call the Service directly without
it, so the same application answers at both paths, with one set of services, middlewares and lifecycle."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from anysentry.api.auth import ManagementAuth
from anysentry.api.http import ApiError, error_response
from anysentry.api.ingest_workers import WORKERS_ENV, IngestWorkers
from anysentry.api.ingest_workers import default_size as default_workers
from anysentry.api.services import Services
from anysentry.resources.models import PUBLIC_BASE_PATH

log = logging.getLogger("anysentry.api")
API_BASE = "/security-center"
DEFAULT_PORT = 29653
SERVICES = web.AppKey("services", Services)
SETTINGS = web.AppKey("settings", object)


class SettingsError(ValueError):
    """A setting the API cannot start with: commands print it and exit 2 rather than show a stack trace."""


def normalize_public_base_path(value: str | None) -> str:
    """`/anysentry/` and `/anysentry` are the prefix `/anysentry`; "" and "/" are none (""). The rule is
    the CRD's (`spec.ui.publicBasePath`); anything else (no leading slash, `..`, a query) is refused
    rather than served somewhere unexpected. A prefix under the API base itself would shadow its routes."""
    text = (value or "").strip()
    if not re.fullmatch(PUBLIC_BASE_PATH, text):
        raise SettingsError(f"PUBLIC_BASE_PATH must be a path such as /anysentry/ (segments of letters, digits "
                            f"and . _ ~ -, each starting with a letter or digit), got {value!r}")
    text = text.rstrip("/")
    if text == API_BASE or text.startswith(API_BASE + "/"):
        raise SettingsError(f"PUBLIC_BASE_PATH cannot be {API_BASE} or under it (the API base), got {value!r}")
    return text


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative, got {raw!r}")
    return value


@dataclass(frozen=True)
class ApiSettings:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    public_base_path: str = ""
    max_body_bytes: int = 8 * 1024 * 1024
    data_dir: Path = field(default_factory=lambda: Path(".anysentry").resolve())
    ingest_workers: int = 0  # worker processes judging large batches (anysentry.api.ingest_workers)

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_base_path", normalize_public_base_path(self.public_base_path))

    @classmethod
    def from_env(cls, **overrides) -> "ApiSettings":
        values = {
            "port": _env_int("PORT", DEFAULT_PORT),
            "public_base_path": os.environ.get("PUBLIC_BASE_PATH", ""),
            "max_body_bytes": _env_int("ANYSENTRY_MAX_BODY_BYTES", 8 * 1024 * 1024),
            "data_dir": Path(os.environ.get("ANYSENTRY_DATA_DIR", ".anysentry")).resolve(),
            "ingest_workers": _env_int(WORKERS_ENV, default_workers()),
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


def under_prefix(prefix: str, routes: list) -> list:
    """The same routes as seen with `prefix` stripped: `<prefix><path>` routes exactly where `<path>` does."""
    return [web.RouteDef(route.method, prefix + route.path, route.handler, route.kwargs) for route in routes]


def build_app(services: Services, settings: ApiSettings) -> web.Application:
    """One application, so both paths share handlers, services, JSON errors, CORS and one startup/cleanup."""
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[cors_middleware, errors_middleware])
    app[SERVICES] = services
    app[SETTINGS] = settings
    modules = route_modules()
    for module in modules:
        app.add_routes(module.ROUTES)
    if settings.public_base_path:
        for module in modules:
            app.add_routes(under_prefix(settings.public_base_path, module.ROUTES))
    if settings.ingest_workers:
        services.use_workers(IngestWorkers(settings.ingest_workers))
    app.on_startup.append(_startup)
    app.on_cleanup.append(_cleanup)
    return app


async def _startup(app: web.Application) -> None:
    await app[SERVICES].start()


async def _cleanup(app: web.Application) -> None:
    await app[SERVICES].stop()


def management(request: web.Request) -> None:
    request.app[SERVICES].auth.require(request)


async def with_resource_id(request: web.Request, kind: str, id_field: str, body: dict, book) -> dict:
    """A REST create's body: in a cluster with the id of the resource the mirror names for it, so the
    record is one under REST, the replicas and the operator (SPEC §1); elsewhere as it is."""
    mirror = getattr(request.app[SERVICES], "mirror", None)
    if mirror is None:
        return body
    return {**body, id_field: await mirror.claim_id(kind, body, book)}


def publish_resource(request: web.Request, kind: str, record: dict) -> None:
    """In a cluster a REST change is also written as a resource, so kubectl and GitOps see it."""
    mirror = getattr(request.app[SERVICES], "mirror", None)
    if mirror is not None:
        mirror.publish(kind, record)


__all__ = ["ApiSettings", "ManagementAuth", "SERVICES", "API_BASE", "SettingsError", "build_app", "management",
           "normalize_public_base_path"]
