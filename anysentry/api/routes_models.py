"""Model connections (SPEC §11.3) [M]: read, test, activate in memory, clear.

A connection is tested first (`POST …/test` calls the endpoint once) and only a successful test
yields a `testToken` (valid 5 minutes, single use) that `PUT …/{profile}` activates. Activated
connections live in this process's memory only; API keys are never stored, logged or returned."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from anysentry.api.app import SERVICES, management
from anysentry.api.auth import actor_from
from anysentry.api.http import ApiError, ok, read_object, text
from anysentry.events.timefmt import iso_time
from anysentry.judge.llm import DEEP, PROFILES, Connection, clamp_context, clamp_timeout, normalize_url

BASE = "/security-center/config/model-connections"


def _tiers(request: web.Request):
    tiers = getattr(request.app[SERVICES], "tiers", None)
    if tiers is None:
        raise ApiError(503, "deeper tiers are not enabled in this process")
    return tiers


def _profile(value: object) -> str:
    profile = text(value, 64)
    if profile not in PROFILES:
        raise ApiError(400, f"profile must be one of {', '.join(PROFILES)}")
    return profile


def _view(request: web.Request) -> dict:
    services = request.app[SERVICES]
    tiers = _tiers(request)
    policy = services.policy.policy
    return {"connections": tiers.views(policy), "status": tiers.status(policy)}


async def list_connections(request: web.Request) -> web.Response:
    management(request)
    return ok(_view(request))


async def test_connection(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    profile = _profile(body.get("profile"))
    tiers = _tiers(request)
    current = tiers.connection(profile, request.app[SERVICES].policy.policy)
    url = normalize_url(profile, body.get("url")) if text(body.get("url")) else current.url
    if not url:
        raise ApiError(400, "url is required")
    if not url.startswith(("http://", "https://")):
        raise ApiError(400, "url must be an http(s) URL")
    given_key = body.get("apiKey")
    if given_key is not None and not isinstance(given_key, str):
        raise ApiError(400, "apiKey must be a string")
    api_key = (given_key or "").strip() or current.api_key
    if not api_key:
        raise ApiError(400, "apiKey is required (no key is configured for this profile)")
    key_source = "memory" if (given_key or "").strip() else current.key_source
    timeout = clamp_timeout(profile, body.get("timeoutS", current.timeout_s))
    conn = Connection(profile, url, text(body.get("model"), 200) or current.model or "default", timeout, api_key,
                      clamp_context(body.get("contextTokens", current.context_tokens or 32768)) if profile == DEEP else 0,
                      "memory", key_source)
    probe = replace(conn, timeout_s=min(conn.timeout_s, 30))  # a test must not hold the request for minutes
    result = await tiers.test_connection(probe)
    result["timeoutS"] = conn.timeout_s
    if result["ok"]:
        token, expires = tiers.issue_test_token(conn)
        result.update(testToken=token, expiresAt=iso_time(expires))
    else:
        result.update(testToken=None, expiresAt=None)
    request.app[SERVICES].audit.record(
        "model_connection.tested", "model_connection", profile, f"{profile} connection test {'passed' if result['ok'] else 'failed'}",
        actor=actor_from(request), result="success" if result["ok"] else "failure",
        details={"profile": profile, "url": url, "model": conn.model, "latencyMs": result["latencyMs"]})
    return ok(result)


async def activate_connection(request: web.Request) -> web.Response:
    management(request)
    profile = _profile(request.match_info["profile"])
    body = await read_object(request)
    token = text(body.get("testToken"), 200)
    if not token:
        raise ApiError(400, "testToken is required (test the connection first)")
    tiers = _tiers(request)
    conn = tiers.redeem_test_token(token, profile)
    if conn is None:
        raise ApiError(400, "testToken is unknown, expired, already used or for another profile")
    tiers.activate(conn)
    request.app[SERVICES].audit.record(
        "model_connection.activated", "model_connection", profile, f"{profile} connection activated",
        actor=actor_from(request), details={"profile": profile, "url": conn.url, "model": conn.model})
    return ok(_view(request))


async def clear_connection(request: web.Request) -> web.Response:
    management(request)
    profile = _profile(request.match_info["profile"])
    tiers = _tiers(request)
    existed = tiers.clear(profile)
    request.app[SERVICES].audit.record(
        "model_connection.cleared", "model_connection", profile,
        f"{profile} connection cleared" if existed else f"{profile} had no activated connection",
        actor=actor_from(request), details={"profile": profile, "hadConnection": existed})
    return ok(_view(request))


ROUTES = [
    web.get(BASE, list_connections),
    web.post(BASE + "/test", test_connection),
    web.put(BASE + "/{profile}", activate_connection),
    web.post(BASE + "/{profile}/clear", clear_connection),
]
