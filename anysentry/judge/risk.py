"""The risk taxonomy (SPEC §10): categories, inference for decisions without an explicit risk,
dashboard groups and rollup levels.

One table drives all of them, so a category's name and type can never disagree between the judge,
the dashboard and an export."""

from __future__ import annotations

from dataclasses import dataclass

from anysentry.events import kinds as K


@dataclass(frozen=True, slots=True)
class Risk:
    """What kind of harm a non-allow decision points at (§10.1)."""

    category: str
    name: str
    riskType: str

    def to_dict(self) -> dict:
        return {"category": self.category, "name": self.name, "riskType": self.riskType}


# §10.1: riskCategory → (riskType, riskName)
TAXONOMY: dict[str, tuple[str, str]] = {
    "systemic_risk": ("system", "Cloud metadata / SSRF"),
    "privilege_escalation": ("system", "Privilege escalation / process injection"),
    "secret_exfil": ("communication", "Secret exfiltration"),
    "prompt_injection": ("communication", "Prompt injection"),
    "communication_risk": ("communication", "Anomalous egress / callback"),
    "command_danger": ("atomic", "Dangerous command execution"),
    "data_leak": ("atomic", "Credential file access"),
    "model_output_risk": ("atomic", "Model output risk (reserved)"),
    "other": ("atomic", "Other risk"),
    "producer_finding": ("atomic", "Producer security finding"),
    "runtime_failure": ("atomic", "Runtime failure"),
    "runtime_guard_fallback": ("atomic", "Runtime guard fallback"),
}
BENIGN = Risk("benign", "Benign", "")
RISKS: dict[str, Risk] = {category: Risk(category, name, kind) for category, (kind, name) in TAXONOMY.items()}

# dashboard groups; "atomic" is shown as "single-agent"
DASHBOARD_GROUPS: dict[str, tuple[str, ...]] = {
    "system": ("systemic_risk", "privilege_escalation"),
    "communication": ("secret_exfil", "prompt_injection", "communication_risk"),
    "atomic": ("command_danger", "data_leak", "other"),
}
_GROUP_OF = {category: group for group, members in DASHBOARD_GROUPS.items() for category in members}

RISK_LEVELS = ("safe", "low", "medium", "high", "critical")
RISK_LEVEL_TEXT = {"safe": "Safe", "low": "Low", "medium": "Medium", "high": "High", "critical": "Critical"}


def risk_for(category: str) -> Risk:
    """The taxonomy entry of a category; anything unknown is `other` (never an invented category)."""
    return RISKS.get(category) or (BENIGN if category == "benign" else RISKS["other"])


def dashboard_group(category: str) -> str | None:
    """`system`, `communication`, `atomic` or None for categories the dashboard does not group."""
    return _GROUP_OF.get(category)


# §10.2, in order; the first rule whose needles occur in the lowercased reason wins
_INFERENCE: tuple[tuple[str, tuple[str, ...], frozenset[str]], ...] = (
    ("systemic_risk", ("metadata", "ssrf"), frozenset({K.EGRESS, K.DNS})),
    ("privilege_escalation", ("privilege", "ptrace", "process injection", "listening port", "backdoor"), frozenset()),
    ("secret_exfil", ("secret in outbound", "secret exfil", "private key"), frozenset()),
    ("prompt_injection", ("prompt injection", "jailbreak"), frozenset()),
    ("communication_risk", ("exfil", "callback", "oob", "dnslog"), frozenset()),
    ("data_leak", ("credential", "sensitive file"), frozenset({K.FILE_ACCESS})),
    ("command_danger", ("piped", "reverse-shell", "destructive", "disk", "rce"), frozenset({K.TOOL_EXEC})),
)


def infer_category(reason: str, kind: str) -> str:
    """§10.2: a category from the decision's reason and the judged kind.

    Rule 1 needs both a needle and a network kind; rules 6 and 7 match on a needle *or* the kind."""
    text = (reason or "").lower()
    for category, needles, by_kind in _INFERENCE:
        hit = any(n in text for n in needles)
        if category == "systemic_risk":
            if hit and kind in by_kind:
                return category
        elif hit or kind in by_kind:
            return category
    return "other"


def infer_risk(reason: str, kind: str) -> Risk:
    return RISKS[infer_category(reason, kind)]


def risk_level(worst_severity: str | None) -> str:
    """§10.3 rollup level from the worst severity among non-allow decisions (None: there were none)."""
    if not worst_severity or worst_severity == "info" or worst_severity not in RISK_LEVEL_TEXT:
        return "safe"
    return worst_severity


def risk_level_text(level: str) -> str:
    return RISK_LEVEL_TEXT.get(level, "Safe")
