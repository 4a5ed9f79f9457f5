"""Policy replay (SPEC §11.4): what a draft policy would have decided on events already stored.

Each stored event is re-normalised from its `rawPreview` (the redacted input line) and judged by a
throwaway judge built from the draft; nothing is written. The result says what would change."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from anysentry.events.model import Observation
from anysentry.events.observer import normalize
from anysentry.judge.decision import SEVERITY_RANK, max_severity
from anysentry.judge.engine import Judge

CHANGE_ORDER = {"new_block": 0, "removed_block": 1, "new_escalation": 2}
OBSERVED = {"verdict": "allow", "tier": "Rules", "severity": "info", "reason": "observed"}


@dataclass(frozen=True, slots=True)
class StoredDecision:
    """The columns replay needs from a stored event (latest revision)."""

    eventId: str
    at: int
    eventKind: str
    subject: str
    agentId: str
    workspacePath: str
    traceId: str
    riskCategory: str
    riskName: str
    verdict: str
    tier: str
    severity: str
    reason: str
    source: str
    rawPreview: str


def change_type(current: dict, simulated: dict) -> str | None:
    cv, sv = current["verdict"], simulated["verdict"]
    if cv != "block" and sv == "block":
        return "new_block"
    if cv == "block" and sv != "block":
        return "removed_block"
    if cv == "allow" and sv == "escalate":
        return "new_escalation"
    if cv == "escalate" and sv == "allow":
        return "removed_escalation"
    cs, ss = SEVERITY_RANK.get(current["severity"], 0), SEVERITY_RANK.get(simulated["severity"], 0)
    if ss > cs:
        return "severity_increase"
    if ss < cs:
        return "severity_decrease"
    if cv != sv or current["tier"] != simulated["tier"]:
        return "verdict_changed"
    return None


def _simulate_one(judge: Judge, row: StoredDecision) -> dict | None:
    obs = normalize({"line": row.rawPreview, "source": row.source}, default_source=row.source or "api", now=row.at)
    if not isinstance(obs, Observation):
        return None
    outcome = judge.decide(obs)
    if outcome is None:
        return dict(OBSERVED)
    decision, _ = outcome
    return {"verdict": decision.verdict, "tier": decision.tier, "severity": decision.severity, "reason": decision.reason,
            "riskCategory": decision.risk.category if decision.risk else "benign",
            "riskName": decision.risk.name if decision.risk else "Benign"}


def _bucket() -> dict:
    return {"eventCount": 0, "newBlocks": 0, "removedBlocks": 0, "newEscalations": 0, "maxSeverity": "info"}


def simulate(policy: dict, rows: list[StoredDecision], *, limit: int = 120, display=str) -> dict:
    """Replay `rows` through a judge for `policy` (a PolicyError propagates: the draft is invalid)."""
    judge = Judge(policy)
    evaluated = skipped = 0
    diffs: list[dict] = []
    by_agent: dict[str, dict] = defaultdict(_bucket)
    by_workspace: dict[str, dict] = defaultdict(_bucket)
    counts = defaultdict(int)
    for row in rows:
        if not row.rawPreview:
            skipped += 1
            continue
        simulated = _simulate_one(judge, row)
        if simulated is None:
            skipped += 1
            continue
        evaluated += 1
        current = {"verdict": row.verdict, "tier": row.tier, "severity": row.severity, "reason": row.reason}
        kind = change_type(current, simulated)
        if kind is None:
            continue
        counts[kind] += 1
        for key, bucket in ((row.agentId, by_agent[row.agentId]), (row.workspacePath, by_workspace[row.workspacePath])):
            bucket["key"] = key
            bucket["eventCount"] += 1
            bucket["newBlocks"] += kind == "new_block"
            bucket["removedBlocks"] += kind == "removed_block"
            bucket["newEscalations"] += kind == "new_escalation"
            bucket["maxSeverity"] = max_severity(bucket["maxSeverity"], simulated["severity"])
        diffs.append({
            "eventId": row.eventId, "at": display(row.at), "_at": row.at, "eventKind": row.eventKind, "subject": row.subject,
            "agentId": row.agentId, "workspacePath": row.workspacePath, "traceId": row.traceId,
            "riskCategory": simulated.get("riskCategory", row.riskCategory), "riskName": simulated.get("riskName", row.riskName),
            "current": current,
            "simulated": {k: simulated[k] for k in ("verdict", "tier", "severity", "reason")},
            "changeType": kind,
        })
    diffs.sort(key=lambda d: (CHANGE_ORDER.get(d["changeType"], 3), -SEVERITY_RANK.get(d["simulated"]["severity"], 0), -d["_at"]))
    for diff in diffs:
        diff.pop("_at")

    def ranked(buckets: dict) -> list[dict]:
        items = sorted(buckets.values(), key=lambda b: (-b["newBlocks"], -b["eventCount"], b["key"]))
        return [{"key": b["key"], **{k: v for k, v in b.items() if k != "key"}} for b in items[:20]]

    return {
        "summary": {
            "evaluatedEvents": evaluated, "skippedEvents": skipped, "changedEvents": len(diffs),
            "newBlocks": counts["new_block"], "removedBlocks": counts["removed_block"],
            "newEscalations": counts["new_escalation"], "removedEscalations": counts["removed_escalation"],
            "severityIncreases": counts["severity_increase"], "severityDecreases": counts["severity_decrease"],
            "affectedAgents": len(by_agent), "affectedWorkspaces": len(by_workspace),
        },
        "diffs": diffs[:limit],
        "byAgent": ranked(by_agent),
        "byWorkspace": ranked(by_workspace),
        "policyVersion": judge.version,
    }
