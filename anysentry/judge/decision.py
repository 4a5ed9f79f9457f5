"""What a judge tier returns for one event (SPEC §9.1), how it scores (§10.3), and how it lands on
the canonical event (§7.1).

Every tier (L1 rules now, L2/L3 later, the runtime guard) speaks this one type, so storage,
incidents and replay never need to know which tier decided."""

from __future__ import annotations

from dataclasses import dataclass

from anysentry.events.ids import sha1_hex
from anysentry.events.model import AgentEvent
from anysentry.judge.risk import BENIGN, Risk, infer_risk

VERDICTS = ("allow", "block", "escalate")
TIERS = ("Rules", "Llm", "Agent")
SEVERITIES = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
ACTION_KINDS = ("DenyExec", "DenyEgress", "DenyFile")

# §10.3: allow is always 0; otherwise the score follows severity
RISK_SCORES = {"info": 8, "low": 28, "medium": 52, "high": 76, "critical": 95}

FAIL_OPEN_SUFFIX = " [unresolved escalation, fail-open]"
FAIL_CLOSED_SUFFIX = " [unresolved escalation, fail-closed]"
UNRESOLVED_MARKER = "unresolved escalation"


@dataclass(frozen=True, slots=True)
class Action:
    """An enforcement hint (`DenyExec`/`DenyEgress`/`DenyFile`) and what it targets."""

    kind: str
    target: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "target": self.target}


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict with its tier, severity, reason, optional action and risk.

    `annotations` are attributes the decision adds to the event (the recursion guard marks its
    events this way); it is empty for almost every decision."""

    verdict: str
    tier: str
    severity: str
    reason: str
    action: Action | None = None
    risk: Risk | None = None
    annotations: tuple[tuple[str, str | int | float | bool], ...] = ()

    def to_dict(self) -> dict:
        """The §9.1 wire shape (`action`/`risk` only when present)."""
        out = {"verdict": self.verdict, "tier": self.tier, "severity": self.severity, "reason": self.reason}
        if self.action is not None:
            out["action"] = self.action.to_dict()
        if self.risk is not None:
            out["risk"] = self.risk.to_dict()
        return out


def severity_rank(severity: str) -> int:
    """Position in info < low < medium < high < critical; unknown values rank as info."""
    return SEVERITY_RANK.get(severity, 0)


def max_severity(a: str, b: str) -> str:
    return a if severity_rank(a) >= severity_rank(b) else b


def at_least(severity: str, floor: str) -> str:
    """`severity`, raised to `floor` when below it."""
    return floor if severity_rank(severity) < severity_rank(floor) else severity


def worst_severity(severities) -> str | None:
    """The highest severity in an iterable, None when it is empty."""
    worst = None
    for s in severities:
        if worst is None or severity_rank(s) > severity_rank(worst):
            worst = s
    return worst


def risk_score(verdict: str, severity: str) -> int:
    return 0 if verdict == "allow" else RISK_SCORES.get(severity, RISK_SCORES["info"])


def restore_fail_open(decision: Decision) -> Decision:
    """§9.2 compatibility: a judge that reports fail-open as `allow` + the unresolved-escalation
    marker is rewritten back to `escalate` (severity ≥ low) so dashboards count it."""
    if decision.verdict != "allow" or UNRESOLVED_MARKER not in decision.reason:
        return decision
    return Decision("escalate", decision.tier, at_least(decision.severity, "low"), decision.reason,
                    decision.action, decision.risk, decision.annotations)


def apply_decision(event: AgentEvent, decision: Decision, *, policy_version: str, judgment: dict | None) -> AgentEvent:
    """Write a decision onto the event (§9.2 step 7): verdict fields, action, risk and score,
    revision metadata. Allow is always benign with score 0."""
    decision = restore_fail_open(decision)
    verdict = decision.verdict
    event.verdict = verdict
    event.tier = decision.tier
    event.severity = decision.severity
    event.reason = decision.reason
    action = decision.action
    event.actionKind = action.kind if action is not None else ""
    event.actionTarget = action.target if action is not None else ""
    if verdict == "allow":
        risk = BENIGN
    else:
        risk = decision.risk or infer_risk(decision.reason, event.attributes.get("observerKind") or event.eventKind)
    event.riskCategory = risk.category
    event.riskName = risk.name
    event.riskType = risk.riskType
    event.riskScore = float(risk_score(verdict, decision.severity))
    event.policyVersion = policy_version
    event.evaluationId = "eval_" + sha1_hex(f"{event.eventId}\0{policy_version}\0")  # hash_id("eval", both strings)
    event.judgment = judgment
    event.decisionStatus = "succeeded"
    if decision.annotations:
        event.attributes.update(decision.annotations)
    return event
