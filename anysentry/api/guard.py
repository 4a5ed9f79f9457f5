"""The runtime guard (SPEC §12): `security-center.assessRuntimeAction`, legacy `security.runtimeGuard`.

One call judges one agent action before it runs: the action becomes an event that goes through the
ingest pipeline synchronously (judged by L1 and appended to the durable buffer, exactly like any
producer event), its verdict becomes a policy action under the caller's autonomy mode, the fallback
checks of `anysentry.judge.guard` may raise it, and a raised action is recorded as a follow-up
finding event linked to the action. The path never reads the store: its cost is one judgment (two
when a fallback fires) and one buffer append, the finding written with its action."""

from __future__ import annotations

import logging
import time

from anysentry.api.pipeline import credentials
from anysentry.events.generic import api_item, clean_request
from anysentry.events.model import ParsedBody
from anysentry.events.synthesize import DEFAULTABLE
from anysentry.events.timefmt import now_ms
from anysentry.judge import guard as G

log = logging.getLogger("anysentry.guard")


def _prepare(services, params: dict, headers, event: dict):
    """Judge one guard event without writing it: (prepared batch, item answer, judged AgentEvent or
    None). `services.pipeline.commit` makes it durable; concurrent calls share one fsync through
    the durable buffer's group commit, and an action commits with its finding in one write."""
    fields = clean_request(G.request_fields(params), G.SOURCE_TYPE)
    defaults = {k: fields[k] for k in DEFAULTABLE if k in fields}
    item = api_item(event, defaults, index=0)
    batch = services.pipeline.prepare(ParsedBody(credentials(fields, headers), [item]), headers=None,
                                      default_type=G.SOURCE_TYPE, default_source="api")
    outcome = batch.outcome
    answer = outcome.items[0]
    judged = outcome.events[0] if answer.get("accepted") and outcome.events else None
    return batch, answer, judged


_warned: dict[tuple[str, str], float] = {}
WARN_EVERY_SECS = 60.0


def _warn(what: str, exc: Exception) -> None:
    """A failure once a minute per kind at warning level (a full buffer fails every call), else debug."""
    key = (what, type(exc).__name__)
    now = time.monotonic()
    if now - _warned.get(key, -WARN_EVERY_SECS) >= WARN_EVERY_SECS:
        _warned[key] = now
        log.warning("%s: %s: %s", what, type(exc).__name__, str(exc)[:300])
    else:
        log.debug("%s: %s", what, type(exc).__name__)


def _fail_closed(services) -> bool:
    try:
        return bool(services.policy.policy.get("failClosed"))
    except Exception:  # noqa: BLE001 - no readable policy: the default mode (fail-open)
        return False


def _evidence(event_id: str | None) -> dict:
    if not event_id:
        return {"eventId": None, "eventsHref": None, "bundleHint": {}}
    return {"eventId": event_id, "eventsHref": f"/events?eventId={event_id}", "bundleHint": {"eventId": event_id}}


def _result(*, autonomy: str, stage: str, action: str, accepted: bool, source_id, event_id, trace_id, run_id,
            verdict: str, tier: str, severity: str, category: str, reason: str, evidence_id) -> dict:
    return {
        "schemaVersion": G.RESULT_SCHEMA, "module": G.MODULE, "operation": G.OPERATION,
        "capabilityId": G.CAPABILITY_ID, "autonomy": autonomy, "stage": stage, "policyAction": action,
        "recommendedAction": G.recommended_action(action), "accepted": accepted, "sourceId": source_id,
        "eventId": event_id, "traceId": trace_id, "runId": run_id, "verdict": verdict, "tier": tier,
        "severity": severity, "riskCategory": category, "reason": reason, "evidence": _evidence(evidence_id),
    }


async def assess_runtime_action(services, params: dict, headers=None, *, constraints: dict | None = None) -> dict:
    """§12.2 → the §12.3 result. Never raises for a judging failure: the policy's fail mode answers."""
    params = params if isinstance(params, dict) else {}
    autonomy = G.autonomy_of(params, constraints)
    stage = G.canonical_stage(params.get("stage"))
    fallback = G.fallback_check(G.guard_text(params))
    try:
        batch, item, judged = _prepare(services, params, headers, G.action_event(params, stage, autonomy))
        source_id = batch.outcome.source_id
        finding_batch, finding = None, None
        if judged is not None:
            base = G.policy_action(judged.verdict, autonomy)
            action = G.stronger(base, G.policy_action(fallback.verdict, autonomy)) if fallback is not None else base
        if judged is not None and action != base:  # the fallback raises the action: a linked finding (§12.2 step 5)
            finding_batch, finding = _prepare_finding(services, params, headers, judged, fallback, stage=stage,
                                                      autonomy=autonomy)
        await services.pipeline.commit(batch, *([finding_batch] if finding_batch is not None else []))
    except Exception as exc:  # noqa: BLE001 - judging could not complete: the per-policy fail mode decides
        _warn("runtime guard judging failed", exc)
        return _failed(services, exc, autonomy=autonomy, stage=stage, fallback=fallback)

    if not item.get("accepted") or judged is None:
        action = G.stronger("block", G.policy_action(fallback.verdict, autonomy) if fallback else "allow")
        return _result(autonomy=autonomy, stage=stage, action=action, accepted=False, source_id=source_id,
                       event_id=None, trace_id=None, run_id=None, verdict="block", tier="Rules",
                       severity=fallback.severity if fallback else "medium",
                       category=fallback.category if fallback else "runtime_guard_fallback",
                       reason=item.get("reason") or "event not accepted", evidence_id=None)

    answer = {"verdict": judged.verdict, "tier": judged.tier, "severity": judged.severity,
              "riskCategory": judged.riskCategory, "reason": judged.reason}
    evidence_id = judged.eventId
    if finding is not None:
        answer = {"verdict": finding.verdict, "tier": finding.tier, "severity": finding.severity,
                  "riskCategory": finding.riskCategory, "reason": finding.reason}
        evidence_id = finding.eventId
    elif action != base:  # the finding could not be written; the answer still carries the fallback's judgment
        answer = {"verdict": fallback.verdict, "tier": "Rules", "severity": fallback.severity,
                  "riskCategory": fallback.category, "reason": fallback.reason}
    return _result(autonomy=autonomy, stage=stage, action=action, accepted=True, source_id=source_id,
                   event_id=judged.eventId, trace_id=judged.traceId, run_id=judged.runId,
                   verdict=answer["verdict"], tier=answer["tier"], severity=answer["severity"],
                   category=answer["riskCategory"], reason=answer["reason"], evidence_id=evidence_id)


def _prepare_finding(services, params: dict, headers, judged, fallback: G.Fallback, *, stage: str, autonomy: str):
    """The follow-up finding with the action's source credentials: (prepared batch, judged event), or
    (None, None) when it cannot be judged — the action's own answer stands; the finding is best effort."""
    action = {"eventId": judged.eventId, "spanId": judged.spanId, "traceId": judged.traceId, "runId": judged.runId,
              "sessionId": judged.sessionId, "agentId": judged.agentId, "workspacePath": judged.workspacePath,
              "userId": judged.userId}
    event = G.finding_event(action, fallback, stage=stage, autonomy=autonomy, at=max(now_ms(), judged.at))
    try:
        batch, _, finding = _prepare(services, params, headers, event)
    except Exception as exc:  # noqa: BLE001
        _warn("runtime guard finding not recorded", exc)
        return None, None
    return (batch, finding) if finding is not None else (None, None)


def _failed(services, exc: BaseException, *, autonomy: str, stage: str, fallback: G.Fallback | None) -> dict:
    """Judging could not complete: block under `failClosed`, else allow (failed open). A fallback
    match is still honoured: the checks are in-process and need no store."""
    mode = G.failure(_fail_closed(services), exc)
    action, verdict, severity, category, reason = mode.policy_action, mode.verdict, mode.severity, "runtime_failure", mode.reason
    if fallback is not None:
        raised = G.stronger(action, G.policy_action(fallback.verdict, autonomy))
        if raised != action:
            action, verdict, severity, category = raised, fallback.verdict, fallback.severity, fallback.category
            reason = f"{fallback.reason}; {mode.reason}"
    return _result(autonomy=autonomy, stage=stage, action=action, accepted=False, source_id=None, event_id=None,
                   trace_id=None, run_id=None, verdict=verdict, tier="Rules", severity=severity, category=category,
                   reason=reason, evidence_id=None)
