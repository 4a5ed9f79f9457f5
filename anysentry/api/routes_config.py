"""The policy (SPEC §11): read it, replace it (effective for the next event), replay a draft."""

from __future__ import annotations

from aiohttp import web

from anysentry.api.app import SERVICES, management
from anysentry.api.auth import actor_from
from anysentry.api.http import ApiError, clamp_int, ok, read_object
from anysentry.events.timefmt import display_time, now_ms
from anysentry.judge.policy import PolicyError, sanitize_policy, validate_policy
from anysentry.judge.replay import StoredDecision, simulate
from anysentry.store.window import TimeWindow

REPLAY_MAX_EVENTS = 20_000
_REPLAY_COLUMNS = ", ".join(StoredDecision.__slots__)


def config_view(services) -> dict:
    """The policy, tier availability and connection status (never keys)."""
    policy = services.policy
    return {
        "policy": policy.policy,
        "policyVersion": policy.version,
        "status": policy.tier_status(),
        "connections": services.tiers.views(policy.policy),
    }


async def get_config(request: web.Request) -> web.Response:
    return ok(config_view(request.app[SERVICES]))


async def put_config(request: web.Request) -> web.Response:
    management(request)
    body = await read_object(request)
    services = request.app[SERVICES]
    draft = body.get("policy") if isinstance(body.get("policy"), dict) and "rules" not in body else body
    previous = services.policy.version
    mirror = getattr(services, "mirror", None)
    try:
        if mirror is not None:  # in a cluster the Policy resource is the truth; replicas follow it
            validate_policy(sanitize_policy(draft))
            await mirror.write_policy(draft)
            return ok({**config_view(services), "appliedVia": "Policy/default"})
        services.policy.set(draft)
    except PolicyError as exc:
        raise ApiError(400, str(exc)) from exc
    await services.config.aput("policy", services.policy.policy)
    services.audit.record("policy.updated", "policy", "policy", f"policy updated ({len(services.policy.policy.get('rules', []))} custom rules)",
                          actor=actor_from(request), details={"previousVersion": previous, "policyVersion": services.policy.version})
    return ok(config_view(services))


async def simulate_policy(request: web.Request) -> web.Response:
    """Replay a draft policy over stored events in the window (§11.4); nothing is stored."""
    management(request)
    body = await read_object(request)
    services = request.app[SERVICES]
    draft = body.get("policy") if isinstance(body.get("policy"), dict) else {}
    window = TimeWindow.from_body(body)
    limit = clamp_int(body.get("limit"), 1, 500, 120)
    await services.writer.sync()
    sql = (f"SELECT {_REPLAY_COLUMNS} FROM {services.store.events_table} "
           "WHERE at >= {start:UInt64} AND at <= {end:UInt64} "
           "ORDER BY at DESC, decisionUpdatedAt DESC LIMIT 1 BY eventId LIMIT {cap:UInt32}")
    try:
        rows = await services.store.aquery_rows(sql, {"start": window.start, "end": window.end, "cap": REPLAY_MAX_EVENTS})
    except Exception as exc:
        raise ApiError(503, f"store unavailable: {str(exc)[:200]}") from exc
    try:
        result = simulate(sanitize_policy(draft), [StoredDecision(*row) for row in rows], limit=limit, display=display_time)
    except PolicyError as exc:
        raise ApiError(400, str(exc)) from exc
    result["updateTime"] = display_time(now_ms())
    summary = result["summary"]
    services.audit.record("policy.simulated", "policy", "policy",
                          f"policy simulated: {summary['changedEvents']} of {summary['evaluatedEvents']} events would change",
                          actor=actor_from(request), details={"policyVersion": result["policyVersion"], **summary})
    return ok(result)


ROUTES = [
    web.post("/security-center/config/simulate", simulate_policy),
    web.get("/security-center/config", get_config),
    web.put("/security-center/config", put_config),
]
