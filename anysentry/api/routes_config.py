"""The policy (SPEC §11): read it, replace it (effective for the next event), replay a draft."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES, management
from anysentry.api.auth import actor_from
from anysentry.api.http import ApiError, ok, read_object
from anysentry.judge.policy import PolicyError


def config_view(services) -> dict:
    policy = services.policy
    llm = policy.policy.get("llm") or None
    deep = policy.policy.get("deepModel") or None
    return {
        "policy": policy.policy,
        "policyVersion": policy.version,
        "status": policy.tier_status(),
        "connections": {
            "fast_review": {"configured": bool(llm), "url": (llm or {}).get("url"), "model": (llm or {}).get("model"),
                            "keyConfigured": policy.key_configured("fast_review")},
            "deep_investigation": {"configured": bool(deep), "url": (deep or {}).get("url"), "model": (deep or {}).get("model"),
                                   "keyConfigured": policy.key_configured("deep_investigation")},
        },
    }


async def get_config(request: web.Request) -> web.Response:
    return ok(config_view(request.app[SERVICES]))


async def put_config(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    services = request.app[SERVICES]
    draft = body.get("policy") if isinstance(body.get("policy"), dict) and "rules" not in body else body
    previous = services.policy.version
    try:
        services.policy.set(draft)
    except PolicyError as exc:
        raise ApiError(400, str(exc)) from exc
    await services.config.aput("policy", services.policy.policy)
    services.audit.record("policy.updated", "policy", "policy", f"policy updated ({len(services.policy.policy.get('rules', []))} custom rules)",
                          actor=actor_from(request), details={"previousVersion": previous, "policyVersion": services.policy.version})
    return ok(config_view(services))


ROUTES = [
    web.get("/security-center/config", get_config),
    web.put("/security-center/config", put_config),
]
