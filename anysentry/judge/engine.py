"""The synchronous L1 judgment pipeline (SPEC §9.2): routing, recursion guard, rules, producer
findings, no-decision handling and escalation resolution, in that order.

Everything a policy determines is built once in `Judge.__init__`: per judged kind, one RE2 set holds
the custom rules and then the built-in signals, in rule order. One scan of the subject returns
*every* matching entry, and the lowest index is the first rule in policy order, so rule order holds
without running rules one by one and without alternation's leftmost-position semantics. A benign
event costs one set scan and one small dict."""

from __future__ import annotations

import os
from dataclasses import dataclass

import re2

from anysentry.events import kinds as K
from anysentry.events.model import AgentEvent, Observation
from anysentry.events.redact import redact_text
from anysentry.judge.decision import (
    FAIL_CLOSED_SUFFIX,
    FAIL_OPEN_SUFFIX,
    SEVERITIES,
    Action,
    Decision,
    apply_decision,
    at_least,
)
from anysentry.judge.policy import policy_version, sanitize_policy, validate_policy
from anysentry.judge.risk import RISKS, TAXONOMY, infer_risk, risk_for
from anysentry.judge.rules import BUILTIN_RULES, INCOMPLETE_EVIDENCE, PolicyError, Rule, clean_subject

ROUTING_VERSION = "identity-routing.v1"
L3_BIN_ENV = "ANYSENTRY_INTERNAL_L3_BIN"
TIERS_ORDER = ("L1", "L2", "L3")

NO_MATCH = Decision("allow", "Rules", "info", "no rule matched")
OBSERVED = Decision("allow", "Rules", "info", "observed")
INCOMPLETE = Decision("escalate", "Rules", INCOMPLETE_EVIDENCE.severity, INCOMPLETE_EVIDENCE.reason,
                      risk=RISKS[INCOMPLETE_EVIDENCE.category])
INTERNAL_L3 = Decision("allow", "Rules", "info", "internal L3 judge activity; recursive judgment suppressed",
                       annotations=(("origin", "l3-judge"), ("recursiveJudgmentSuppressed", True)))
PRODUCER_FINDING_REASON = "producer reported security finding"

# rule action → (the one kind it fits, the stored action kind) (§9.1)
_ACTIONS = {"deny-exec": (K.TOOL_EXEC, "DenyExec"), "deny-egress": (K.EGRESS, "DenyEgress"),
            "deny-file": (K.FILE_ACCESS, "DenyFile")}
_CONTAINER_CGROUPS = ("/docker-", "/kubepods", "/containerd/")

# Agents repeat themselves (the same commands, hosts, files): a kind's matcher remembers the rule a
# short subject matched, so a repeat costs one dict lookup instead of a set scan and confirmations.
SUBJECT_CACHE_LIMIT = 2048
SUBJECT_CACHE_MAX_LEN = 256

_SET_OPTIONS = re2.Options()
_SET_OPTIONS.log_errors = False
_SET_OPTIONS.max_mem = 64 << 20  # many custom rules in one set still get a roomy DFA cache


@dataclass(frozen=True, slots=True)
class Route:
    """Where an event goes by its attribution (§7.7); `stop_reason` is set for L1-only routes."""

    classification: str
    profile: str
    max_tier: str
    reason: str
    stop_reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    """One pattern of a kind's RE2 set: its rule, an optional confirmation, and the decision
    the rule gives on this kind (`action` is the stored action kind when one fits)."""

    rule: Rule
    check: object
    decision: Decision
    action: str


class _KindMatcher:
    """All rules of one judged kind as one RE2 set; `first` returns the first rule in order."""

    __slots__ = ("_match", "_entries", "_seen")

    def __init__(self, patterns: list[str], entries: list[_Entry]):
        self._entries = tuple(entries)
        self._seen: dict[str, _Entry | None] = {}
        self._match = None
        if patterns:
            rset = re2.Set.SearchSet(_SET_OPTIONS)
            for pattern, entry in zip(patterns, entries):
                try:
                    rset.Add(pattern)
                except re2.error:
                    raise PolicyError(f'rule "{entry.rule.name}": pattern cannot be combined into the rule set') from None
            try:
                rset.Compile()
            except re2.error:
                raise PolicyError("the rules are too large to compile together; remove or simplify some") from None
            raw = getattr(rset, "_set", None)
            self._match = raw.Match if raw is not None else rset.Match

    def first(self, subject: str) -> _Entry | None:
        if len(subject) > SUBJECT_CACHE_MAX_LEN:
            return self._scan(subject)
        seen = self._seen
        try:
            return seen[subject]
        except KeyError:
            pass
        entry = self._scan(subject)
        if len(seen) >= SUBJECT_CACHE_LIMIT:
            seen.clear()
        seen[subject] = entry
        return entry

    def _scan(self, subject: str) -> _Entry | None:
        match = self._match
        if match is None:
            return None
        try:
            data = subject.encode("utf-8")
        except UnicodeEncodeError:
            subject = clean_subject(subject)
            data = subject.encode("utf-8")
        hits = match(data)
        if not hits:
            return None
        if len(hits) > 1:
            hits = sorted(hits)
        entries = self._entries
        for index in hits:
            entry = entries[index]
            if entry.check is None or entry.check(subject):
                return entry
        return None


def _rule_decision(rule: Rule, kind: str) -> tuple[Decision, str]:
    risk = None
    if rule.verdict != "allow":
        risk = risk_for(rule.category) if rule.category else infer_risk(rule.reason, kind)
    fits = _ACTIONS.get(rule.action)
    action = fits[1] if fits and fits[0] == kind and rule.verdict != "allow" else ""
    return Decision(rule.verdict, "Rules", rule.severity, rule.reason, None, risk), action


def _action_target(kind: str, subject: str, event: AgentEvent) -> str:
    if kind == K.TOOL_EXEC:
        parts = subject.split(None, 1)
        target = parts[0] if parts else ""
    elif kind == K.EGRESS:
        peer = event.attributes.get("peer")
        target = peer if isinstance(peer, str) and peer else subject.rpartition(":")[0].strip("[]")
    else:
        target = subject
    return redact_text(target)[:512]


def _flag(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


class Judge:
    """The L1 judge for one policy. Build once per policy version; `decide` is safe to call from
    any thread (it only reads, apart from the matchers' memo of subjects, whose dict operations are
    atomic and whose entries never change)."""

    def __init__(self, policy: object = None, *, deeper_tiers=frozenset(), l3_bin: str | None = None):
        self.policy = sanitize_policy(policy)
        self.version = policy_version(self.policy)
        custom = validate_policy(self.policy)
        disabled = set(self.policy["disabledBuiltins"])
        self.rules: tuple[Rule, ...] = tuple(custom) + tuple(r for r in BUILTIN_RULES if r.name not in disabled)
        self.fail_closed = self.policy["failClosed"]
        self.deeper_tiers = frozenset(t for t in deeper_tiers if t in TIERS_ORDER[1:])
        self.l3_bin = (os.environ.get(L3_BIN_ENV, "") if l3_bin is None else l3_bin).strip()
        self._l3_bin_base = os.path.basename(self.l3_bin)
        max_tier = "L3" if "L3" in self.deeper_tiers else "L2" if "L2" in self.deeper_tiers else "L1"
        self.max_tier = max_tier
        candidate = self.policy["identity"]["candidatePipeline"]
        self._unknown = Route("unknown", "l1_only", "L1", "unknown_l1_only", "unknown_l1_only")
        self._routes: dict[str, Route | None] = {
            "confirmed_agent": Route("confirmed_agent", "full", max_tier, "confirmed_agent_full"),
            "probable_agent": (
                Route("probable_agent", "l1_only", "L1", "candidate_agent_l1_only", "candidate_agent_l1_only")
                if candidate == "l1_only" else Route("probable_agent", "full", max_tier, "candidate_agent_full")
            ),
            "unknown": self._unknown,
            "non_agent": None,
        }
        self._matchers: dict[str, _KindMatcher] = {}
        for kind in K.JUDGED_KINDS:
            patterns, entries = [], []
            for rule in self.rules:
                if not rule.applies_to(kind):
                    continue
                decision, action = _rule_decision(rule, kind)
                for signal in rule.signals:
                    patterns.append(signal.pattern)
                    entries.append(_Entry(rule, signal.check, decision, action))
            self._matchers[kind] = _KindMatcher(patterns, entries)

    # -- pipeline -------------------------------------------------------------------------------

    def route(self, classification: str) -> Route | None:
        """§7.7 routing; None means discard. Missing or unrecognised classifications are `unknown`."""
        return self._routes.get(classification, self._unknown)

    def decide(self, obs: Observation) -> tuple[Decision, dict] | None:
        """The decision and §7.1 judgment for one observation; None drops it (`unparseable event`)."""
        route = self._routes.get(obs.classification, self._unknown)
        if route is None:
            return None
        event = obs.event
        kind = obs.judge_kind
        subject = obs.judge_subject
        if event.source == "observer" and self._internal(event, kind, subject):
            return INTERNAL_L3, self._judgment(route, "allow", False, "decision_final")

        eligible = False
        stop = None
        if subject is None:
            if kind not in K.RECORDED_KINDS and event.source != "api":
                return None
            decision, stop = OBSERVED, "no_applicable_l1_rule"
        elif obs.evidence_incomplete and kind == K.TOOL_EXEC:
            decision, stop = INCOMPLETE, "evidence_incomplete"
        else:
            matcher = self._matchers.get(kind)
            entry = matcher.first(subject) if matcher is not None else None
            if entry is None:
                decision = NO_MATCH
            else:
                decision = entry.decision
                if entry.action:
                    decision = Decision(decision.verdict, decision.tier, decision.severity, decision.reason,
                                        Action(entry.action, _action_target(kind, subject, event)), decision.risk)
                eligible = decision.verdict == "escalate"

        if kind == K.SECURITY_ACTION and event.source == "api" and decision.verdict != "block":
            finding = _producer_finding(event.attributes)
            if finding is not None:
                decision, eligible, stop = finding, False, "producer_finding"

        l1_verdict = decision.verdict
        if l1_verdict == "escalate":
            if eligible and route.profile == "full" and route.max_tier != "L1":
                return decision, self._judgment(route, l1_verdict, True, None)  # a deeper tier decides
            decision = self._resolve(decision)
            stop = stop or route.stop_reason or "l2_not_configured"
        else:
            stop = stop or route.stop_reason or "decision_final"
        return decision, self._judgment(route, l1_verdict, eligible, stop)

    def judge_event(self, obs: Observation) -> Observation | None:
        """`decide` and write the result onto `obs.event`; None when the event is dropped."""
        result = self.decide(obs)
        if result is None:
            return None
        decision, judgment = result
        apply_decision(obs.event, decision, policy_version=self.version, judgment=judgment)
        return obs

    # -- steps ----------------------------------------------------------------------------------

    def _judgment(self, route: Route, l1_verdict: str, eligible: bool, stop: str | None) -> dict:
        return {
            "classification": route.classification,
            "profile": route.profile,
            "maxTier": route.max_tier,
            "reason": route.reason,
            "routingVersion": ROUTING_VERSION,
            "policyVersion": self.version,
            "l1Verdict": l1_verdict,
            "nextTierEligible": eligible,
            "stopReason": stop,
        }

    def _resolve(self, decision: Decision) -> Decision:
        """§9.2 step 6: an escalation no deeper tier will take stays visible (fail-open) or blocks
        (fail-closed); never silently allowed."""
        if self.fail_closed:
            verdict, suffix = "block", FAIL_CLOSED_SUFFIX
        else:
            verdict, suffix = "escalate", FAIL_OPEN_SUFFIX
        return Decision(verdict, decision.tier, at_least(decision.severity, "low"), decision.reason + suffix,
                        decision.action, decision.risk, decision.annotations)

    def _internal(self, event: AgentEvent, kind: str, subject: str | None) -> bool:
        """§9.5: the product's own containerised L3 judge (node) must not judge itself recursively."""
        process = event.process or {}
        exe = process.get("exe") or event.attributes.get("exe")
        if not isinstance(exe, str) or not (exe == "node" or exe.endswith("/node")):
            return False
        cgroup = process.get("cgroup") or event.attributes.get("cgroup")
        if not isinstance(cgroup, str) or not any(marker in cgroup for marker in _CONTAINER_CGROUPS):
            return False
        if event.agentId == "sentry-l3":
            return True
        if kind != K.TOOL_EXEC or not self.l3_bin or not subject:
            return False
        return any(tok == self.l3_bin or (tok.endswith("/" + self._l3_bin_base) and "/" not in self.l3_bin)
                   for tok in subject.split())


_SEPARATORS = str.maketrans("", "", "_-. ")


def _producer_finding(attributes: dict) -> Decision | None:
    """§9.4: an API SecurityAction reporting a finding or a failure is never benign telemetry."""
    kind = attributes.get("kind")
    status = attributes.get("status")
    # security_finding, security-finding and SecurityFinding are one alias (§8.3.3)
    is_finding = isinstance(kind, str) and kind.strip().lower().translate(_SEPARATORS) in ("securityfinding", "finding")
    failed = isinstance(status, str) and status.strip().lower() in ("failed", "error")
    if not (is_finding or failed):
        return None
    severity, reason, category = "medium", PRODUCER_FINDING_REASON, "producer_finding"
    if _flag(attributes.get("progressive.guard.fallback")):
        given = attributes.get("progressive.guard.severity")
        severity = given.strip().lower() if isinstance(given, str) and given.strip().lower() in SEVERITIES else "medium"
        given = attributes.get("progressive.guard.reason")
        if isinstance(given, str) and given.strip():
            reason = given.strip()[:200]
        given = attributes.get("progressive.guard.riskCategory")
        category = given.strip() if isinstance(given, str) and given.strip() in TAXONOMY else "runtime_guard_fallback"
    if _flag(attributes.get("progressive.failure")):
        category = "runtime_failure"
    return Decision("escalate", "Rules", severity, reason, None, risk_for(category))

