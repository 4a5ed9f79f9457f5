"""`Source`: the ingest token in a Secret the Source owns, its rotation, and the source's status.

The token lives only in Secret `<source>-ingest-token` (key `token`); the Source carries its SHA-256,
preview and issue time as annotations (`anysentry.io/token-hash`, `…/token-preview`,
`…/token-issued-at`), which is what the api replicas read (mirror.py) to accept it. A token is issued
when there is none, rotated when `tokenRotationDays` have passed (0 means "always overdue", never
rotated automatically) or when the annotation `anysentry.io/rotate-token` is set (the operator
removes it). A Source created through `POST /sources` arrives with the hash of the token the REST
caller got (`anysentry.io/token-issuer: api`) and no Secret; the operator keeps that token and owns
the Secret from the first rotation on.

Plain async functions (`reconcile_source`, `plan_token`, `source_status`) do the work; the kopf
handlers at the bottom only call them."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import kopf

from anysentry.operator import events
from anysentry.operator.kube import plain
from anysentry.operator.loops import Installation, Runtime, register_publisher, runtime
from anysentry.operator.render import TOKEN_KEY, token_secret, token_secret_name
from anysentry.operator.status import awrite_status, from_ms, now_utc, parse_time, rfc3339, with_conditions
from anysentry.ops.sources import new_token, token_hash, token_preview
from anysentry.ops.standalone import resource_source_id, source_body
from anysentry.resources.models import GROUP, VERSION, AlertRef, OpenAlerts, SecretKeyRef, Source, SourceStatus, TokenStatus

log = logging.getLogger("anysentry.operator.source")

ROTATE = "anysentry.io/rotate-token"
HASH = "anysentry.io/token-hash"
PREVIEW = "anysentry.io/token-preview"
ISSUED = "anysentry.io/token-issued-at"
ISSUER = "anysentry.io/token-issuer"
SOURCE_ID = "anysentry.io/source-id"
PHASES = {"active": "Active", "stale": "Stale", "unused": "Unused", "disabled": "Disabled"}
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
_FALSE = ("", "false", "0", "no", "off")


def source_id_of(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return (meta.get("annotations") or {}).get(SOURCE_ID) or resource_source_id(meta.get("namespace") or "default",
                                                                                   meta.get("name", ""))


def secret_token(secret: dict | None) -> str | None:
    if not secret:
        return None
    raw = (secret.get("data") or {}).get(TOKEN_KEY)
    if raw:
        try:
            return base64.b64decode(raw).decode("utf-8").strip() or None
        except (ValueError, UnicodeDecodeError):
            return None
    return ((secret.get("stringData") or {}).get(TOKEN_KEY) or "").strip() or None


@dataclass(frozen=True)
class TokenPlan:
    action: str | None  # None | "issue" | "rotate" | "adopt"
    reason: str = ""


def plan_token(obj: dict, secret: dict | None, now: datetime) -> TokenPlan:
    """What to do with the token of Source `obj` given its Secret (None when there is none)."""
    meta = obj.get("metadata") or {}
    ann = meta.get("annotations") or {}
    spec = obj.get("spec") or {}
    token = secret_token(secret)
    if str(ann.get(ROTATE, "")).strip().lower() not in _FALSE:
        return TokenPlan("rotate", "annotation")
    issued_through_rest = bool(ann.get(HASH)) and ann.get(ISSUER) == "api"  # the caller holds it; no Secret
    if token is None:
        if not issued_through_rest:
            return TokenPlan("issue", "new" if not ann.get(HASH) else "secret-missing")
    elif token_hash(token) != ann.get(HASH):
        if issued_through_rest:
            return TokenPlan("drop-secret", "rotated-through-rest")  # the Secret holds a token no longer valid
        return TokenPlan("adopt", "annotation-out-of-date")
    days = int(spec.get("tokenRotationDays", 90))
    issued = parse_time(ann.get(ISSUED))
    if days > 0 and issued is not None and now >= issued + timedelta(days=days):
        return TokenPlan("rotate", "due")
    return TokenPlan(None)


def _annotations(token: str, issued: datetime, issuer: str = "operator") -> dict:
    return {HASH: token_hash(token), PREVIEW: token_preview(token), ISSUED: rfc3339(issued), ISSUER: issuer}


async def apply_token(kube, obj: dict, secret: dict | None, plan: TokenPlan, now: datetime) -> dict:
    """Carry out `plan`; returns the annotations now in force (hash, preview, issued-at, issuer)."""
    meta = obj["metadata"]
    ann = dict(meta.get("annotations") or {})
    if plan.action in ("issue", "rotate"):
        token = new_token()
        manifest = token_secret(meta["name"], meta["namespace"], meta.get("uid", ""), token, rfc3339(now))
        manifest["data"] = {TOKEN_KEY: base64.b64encode(token.encode()).decode()}
        del manifest["stringData"]
        await kube.apply(manifest)  # the Secret first: it is the truth the annotations follow
        new = _annotations(token, now)
        await kube.merge_patch("Source", meta["namespace"], meta["name"], {"metadata": {"annotations": {**new, ROTATE: None}}})
        ann.update(new)
        ann.pop(ROTATE, None)
        if plan.action == "rotate":
            await events.aemit(kube, obj, "TokenRotated",
                        f"ingest token rotated ({'anysentry.io/rotate-token annotation' if plan.reason == 'annotation' else 'rotation due'}); "
                        f"the previous token is no longer accepted; new token in Secret {manifest['metadata']['name']}")
        else:
            await events.aemit(kube, obj, "TokenIssued", f"ingest token issued into Secret {manifest['metadata']['name']}")
    elif plan.action == "drop-secret":
        await kube.delete("Secret", meta["namespace"], token_secret_name(meta["name"]))
        await events.aemit(kube, obj, "TokenRotated", "ingest token rotated through the REST API; the Secret with the "
                           "previous token was removed (the new token was returned to the caller)")
    elif plan.action == "adopt":
        token = secret_token(secret) or ""
        issued = parse_time(((secret or {}).get("metadata") or {}).get("annotations", {}).get(ISSUED)) or now
        new = _annotations(token, issued)
        await kube.merge_patch("Source", meta["namespace"], meta["name"], {"metadata": {"annotations": new}})
        ann.update(new)
    return ann


def sync_registry(engine, obj: dict, ann: dict | None = None) -> dict | None:
    """The Source as a record of the installation's source registry (token hash included)."""
    return upsert_source(engine.sources, obj, ann)


def upsert_source(registry, obj: dict, ann: dict | None = None) -> dict | None:
    """A Source resource into a `SourceRegistry` (sourceId, fields, token hash); None when invalid.
    Shared by the operator and the api's mirror, so both know a Source by the same id and token."""
    try:
        resource = Source.model_validate(obj)
    except Exception as exc:
        log.warning("Source %s is not valid: %s", (obj.get("metadata") or {}).get("name"), exc)
        return None
    ann = ann if ann is not None else (obj.get("metadata") or {}).get("annotations") or {}
    sid = source_id_of(obj)
    record = registry.upsert(sid, source_body(resource))
    issued = parse_time(ann.get(ISSUED))
    if ann.get(HASH) and (record.get("tokenHash") != ann[HASH]):
        registry.set_token(sid, ann[HASH], ann.get(PREVIEW, ""), int(issued.timestamp() * 1000) if issued else None)
    return record


def open_alerts(engine, **match: str) -> OpenAlerts:
    """Active alerts whose fields equal `match`: the total and the most severe few."""
    alerts = getattr(engine, "alerts", None)
    if alerts is None:
        return OpenAlerts()
    active = [a for a in alerts.values() if a.get("status") in ("open", "acknowledged", "silenced")
              and all(a.get(k) == v for k, v in match.items())]
    active.sort(key=lambda a: (SEVERITY_ORDER.get(a.get("severity"), 5), -(a.get("lastSeenAt") or 0)))
    items = [AlertRef(alertId=a["alertId"], ruleId=a.get("ruleId", ""), severity=a.get("severity", "medium"),
                      status=a.get("status", "open"), title=a.get("title", ""), lastSeenAt=from_ms(a.get("lastSeenAt")))
             for a in active[:10]]
    return OpenAlerts(total=len(active), items=items)


def source_status(obj: dict, ann: dict, item: dict | None, secret_exists: bool, engine, now: datetime) -> SourceStatus:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    generation = int(meta.get("generation") or 0)
    sid = source_id_of(obj)
    item = item or {}
    issued = parse_time(ann.get(ISSUED)) if ann.get(HASH) else None
    days = int(spec.get("tokenRotationDays", 90))
    due = issued + timedelta(days=days) if issued else None
    require = bool(spec.get("requireToken", True))
    rotation = "untracked" if not (require and issued) else ("overdue" if now >= due else "fresh")
    token = TokenStatus(
        secretRef=SecretKeyRef(name=token_secret_name(meta.get("name", "")), key=TOKEN_KEY) if secret_exists else None,
        preview=ann.get(PREVIEW, "") if issued else "", issuedAt=issued, rotationDueAt=due, rotationStatus=rotation)
    enabled = spec.get("enabled", True)
    if not enabled:
        ready = ("Ready", "False", "Disabled", "the source is disabled: its events are rejected")
    elif require and not issued:
        ready = ("Ready", "False", "TokenPending", "an ingest token is required and none is issued yet")
    else:
        ready = ("Ready", "True", "Accepting", "the source accepts events" + (" with its ingest token" if require else ""))
    raw_status = item.get("_status") or ("disabled" if not enabled else "unused")
    return SourceStatus(
        observedGeneration=generation,
        conditions=with_conditions(obj, [ready], generation, now),
        sourceId=sid,
        phase=PHASES.get(raw_status, "Unused"),
        lastSeenAt=from_ms(item.get("lastSeenAt")),
        lastEventAt=from_ms(item.get("lastEventAt")),
        lastHeartbeatAt=from_ms(item.get("lastHeartbeatAt")),
        acceptedEvents=int(item.get("acceptedEvents") or 0),
        acceptedHeartbeats=int(item.get("acceptedHeartbeats") or 0),
        rejectedEvents=int(item.get("rejectedEvents") or 0),
        lastResult=item.get("lastResult") or "",
        lastError=item.get("lastError") or "",
        token=token,
        openAlerts=open_alerts(engine, sourceId=sid),
    )


def _record_view(engine, record: dict | None, now: datetime) -> dict | None:
    if record is None:
        return None
    view = dict(record)
    view["_status"] = engine.sources.status(record, int(now.timestamp() * 1000))
    return view


async def reconcile_source(kube, rt: Runtime, obj: dict, *, now: datetime | None = None) -> SourceStatus:
    """Issue/rotate the token as due, mirror the Source into the installation's registry, write status."""
    now = now or now_utc()
    meta = obj["metadata"]
    secret = await kube.get("Secret", meta["namespace"], token_secret_name(meta["name"]))
    plan = plan_token(obj, secret, now)
    ann = await apply_token(kube, obj, secret, plan, now) if plan.action else dict(meta.get("annotations") or {})
    secret_exists = (secret is not None and plan.action != "drop-secret") or plan.action in ("issue", "rotate")
    engine = rt.engine(meta["namespace"])
    record = sync_registry(engine, obj, ann)
    status = source_status(obj, ann, _record_view(engine, record, now), secret_exists, engine, now)
    await awrite_status(kube, "Source", meta["namespace"], meta["name"], status)
    return status


def forget_source(engine, obj: dict) -> None:
    registry = engine.sources
    registry.remove(source_id_of(obj))


@register_publisher
async def publish_sources(rt: Runtime, inst: Installation) -> None:
    """Counters, phase and alerts of every Source in the namespace (from the refreshed registry); every
    `source_check_secs` a full reconcile, which rotates the tokens that are due (no kopf timer: timers
    put a finalizer on every Source, and a Source must stay deletable while the operator is away)."""
    now = now_utc()
    every = max(1, round(rt.settings.source_check_secs / max(rt.settings.tick_secs, 0.1)))
    full = inst.cycles % every == 0
    for obj in await rt.kube.list("Source", inst.namespace):
        if full:
            await reconcile_source(rt.kube, rt, obj, now=now)
            continue
        engine = inst.engine
        ann = (obj.get("metadata") or {}).get("annotations") or {}
        record = engine.sources.get(source_id_of(obj)) or sync_registry(engine, obj, ann)
        secret_exists = bool(((obj.get("status") or {}).get("token") or {}).get("secretRef"))
        status = source_status(obj, ann, _record_view(engine, record, now), secret_exists, engine, now)
        await awrite_status(rt.kube, "Source", inst.namespace, obj["metadata"]["name"], status)


# ---------------------------------------------------------------------------------------------
# kopf


@kopf.on.resume(GROUP, VERSION, "sources")
@kopf.on.create(GROUP, VERSION, "sources")
@kopf.on.update(GROUP, VERSION, "sources")
async def source_changed(body, **_):
    rt = runtime()
    await reconcile_source(rt.kube, rt, plain(body))


@kopf.on.delete(GROUP, VERSION, "sources", optional=True)
async def source_deleted(body, namespace, **_):
    forget_source(runtime().engine(namespace), plain(body))
