"""Policy sanitisation (SPEC §11.1), version ids (§4.2), custom rule compilation and Policy manifests."""

from __future__ import annotations

import pytest

from anysentry.events.ids import hash_id
from anysentry.judge.policy import (
    DEFAULT_POLICY,
    load_policy_file,
    load_policy_text,
    normalize_llm_url,
    policy_from_manifest,
    policy_version,
    sanitize_policy,
)
from anysentry.judge.rules import PolicyError, compile_rules, sanitize_rule

DEFAULT_JSON = ('{"failClosed":false,"speculate":"off","rules":[],"llm":null,"deepModel":null,"agent":null,'
                '"identity":{"candidatePipeline":"full"}}')


@pytest.mark.parametrize("raw", [None, [], "policy", 42, {}, {"unknown": 1}, {"rules": "x", "identity": 3, "llm": "u"}])
def test_anything_sanitises_to_the_default(raw):
    assert sanitize_policy(raw) == DEFAULT_POLICY


def test_shape_and_key_order():
    clean = sanitize_policy({"identity": {"candidatePipeline": "l1_only"}, "failClosed": "true", "speculate": "HIGH"})
    assert list(clean) == ["failClosed", "speculate", "rules", "llm", "deepModel", "agent", "identity", "mode", "disabledBuiltins"]
    assert clean["failClosed"] is True and clean["speculate"] == "high" and clean["identity"] == {"candidatePipeline": "l1_only"}
    assert sanitize_policy({"speculate": "max", "identity": {"candidatePipeline": "x"}, "failClosed": "no"})["speculate"] == "off"


def test_rule_coercion():
    rule = sanitize_rule({"match": "x"})
    assert rule == {"name": "rule", "on": "ToolExec", "match": "x", "verdict": "block", "severity": "medium",
                    "reason": "custom rule", "action": ""}
    rule = sanitize_rule({"name": "n" * 100, "on": "dns", "match": "y", "verdict": "ALLOW", "severity": "bogus",
                          "reason": "r" * 300, "action": "deny-file", "extra": 1})
    assert rule["name"] == "n" * 80 and rule["on"] == "Dns" and rule["verdict"] == "allow" and rule["severity"] == "medium"
    assert rule["reason"] == "r" * 200 and rule["action"] == "deny-file" and "extra" not in rule
    assert sanitize_rule({"match": "z", "on": "network"})["on"] == "Egress"
    assert sanitize_rule({"match": "z", "on": "LlmApi"})["on"] == "ToolExec"  # not judged → default
    assert sanitize_rule({"match": "z", "on": "*"})["on"] == "*"
    assert sanitize_rule({"match": "z", "action": "kill"})["action"] == ""
    assert sanitize_rule({"match": "z", "description": "from description"})["reason"] == "from description"
    assert sanitize_rule({"match": ""}) is None and sanitize_rule({"name": "no-match"}) is None and sanitize_rule("x") is None


def test_rule_limit_and_empty_rules_dropped():
    raw = [{"name": f"r{i}", "match": f"m{i}"} for i in range(250)]
    clean = sanitize_policy({"rules": [{"match": ""}, "junk", *raw]})
    assert len(clean["rules"]) == 200 and clean["rules"][0]["name"] == "r0"
    assert len(compile_rules(raw)) == 200


@pytest.mark.parametrize(("url", "expected"), [
    ("https://llm.test/v1/chat/completions", "https://llm.test/v1"),
    ("https://llm.test/v1/chat/completions/", "https://llm.test/v1"),
    ("https://llm.test/v1/responses", "https://llm.test/v1"),
    ("https://llm.test/v1/", "https://llm.test/v1"),
    ("  https://llm.test  ", "https://llm.test"),
])
def test_llm_url_normalisation(url, expected):
    assert normalize_llm_url(url) == expected
    assert sanitize_policy({"llm": {"url": url}})["llm"] == {"url": expected, "model": "default", "timeoutS": 60}


def test_model_sections():
    clean = sanitize_policy({
        "llm": {"url": "http://x/v1", "model": "m", "timeoutS": 9999, "apiKey": "sk-never-kept"},
        "deepModel": {"url": "http://y", "model": "d", "contextTokens": 10},
        "agent": {"bin": "/opt/l3", "skills": ["a", "", "b"]},
    })
    assert clean["llm"] == {"url": "http://x/v1", "model": "m", "timeoutS": 600}
    assert clean["deepModel"] == {"url": "http://y", "model": "d", "timeoutS": 90, "contextTokens": 4096}
    assert clean["agent"] == {"bin": "/opt/l3", "skills": ["a", "b"]}
    assert sanitize_policy({"llm": {"url": "http://x", "timeoutS": "0"}})["llm"]["timeoutS"] == 1
    assert sanitize_policy({"llm": {"url": "http://x", "timeoutS": "nan"}})["llm"]["timeoutS"] == 60
    assert sanitize_policy({"deepModel": {"url": "u", "contextTokens": 10**9}})["deepModel"]["contextTokens"] == 262144
    assert sanitize_policy({"llm": {"model": "m"}, "agent": {"skills": "s"}})["llm"] is None
    assert "sk-never-kept" not in str(clean)


def test_sanitise_is_idempotent():
    raw = {"failClosed": 1, "rules": [{"name": "a", "on": "dns", "match": "x"}], "llm": {"url": "http://x/chat/completions"},
           "mode": "enforce", "disabledBuiltins": ["pipe-to-shell", "pipe-to-shell", 3]}
    once = sanitize_policy(raw)
    assert sanitize_policy(once) == once
    assert once["disabledBuiltins"] == ["pipe-to-shell", "3"] and once["mode"] == "enforce"


def test_policy_version():
    version = policy_version({})
    assert version == hash_id("pol", [DEFAULT_JSON]) and version.startswith("pol_") and len(version) == 20
    a = {"failClosed": True, "rules": [{"name": "x", "match": "y", "on": "Dns"}]}
    b = {"rules": [{"on": "Dns", "match": "y", "name": "x"}], "failClosed": True}  # same policy, other key order
    assert policy_version(a) == policy_version(b) == policy_version(sanitize_policy(a))
    assert policy_version(a) != policy_version({**a, "failClosed": False})
    assert policy_version(a) != policy_version({**a, "rules": [{"name": "x", "match": "z", "on": "Dns"}]})
    assert policy_version({**a, "mode": "enforce"}) == policy_version(a)  # mode does not change decisions
    assert policy_version({**a, "disabledBuiltins": ["bind-listener"]}) != policy_version(a)


def test_bad_regex_names_the_rule():
    with pytest.raises(PolicyError) as err:
        compile_rules([{"name": "fine", "match": "ok"}, {"name": "block-x", "match": "(abc"}])
    assert str(err.value) == 'rule "block-x": invalid regex: missing ): (abc'


def test_lookahead_is_rejected_by_re2():
    with pytest.raises(PolicyError, match=r'^rule "peek": invalid regex: invalid perl operator: \(\?='):
        compile_rules([{"name": "peek", "match": "curl(?=.*sh)"}])
    with pytest.raises(PolicyError, match='rule "backref": invalid regex'):
        compile_rules([{"name": "backref", "match": r"(a)\1"}])


def test_overlong_match_is_an_error_not_a_truncation():
    with pytest.raises(PolicyError, match='rule "long": match is longer than 1000 characters'):
        compile_rules([{"name": "long", "match": "a|" * 600}])


def test_compiled_rules():
    rules = compile_rules([{"name": "r", "on": "*", "match": "(?i)x", "verdict": "escalate", "reason": "why"}])
    assert rules[0].reason == "r: why" and rules[0].applies_to("Dns") and not rules[0].applies_to("ProcessExit")
    assert rules[0].matches("X") and not rules[0].builtin
    assert compile_rules(None) == [] and compile_rules("rules") == []


MANIFEST = """
apiVersion: anysentry.io/v1alpha1
kind: Policy
metadata:
  name: team-a
  namespace: agents
spec:
  mode: enforce
  failClosed: true
  rules:
    - name: no-terraform-destroy
      on: ToolExec
      match: '^terraform\\s+destroy'
      verdict: block
      severity: high
      reason: infrastructure teardown
      action: deny-exec
    - name: empty
      match: ""
  disabledBuiltins: [bind-listener]
"""


def test_manifest():
    policy = load_policy_text(MANIFEST)
    assert policy["mode"] == "enforce" and policy["failClosed"] is True and policy["disabledBuiltins"] == ["bind-listener"]
    assert policy["rules"] == [{"name": "no-terraform-destroy", "on": "ToolExec", "match": "^terraform\\s+destroy",
                                "verdict": "block", "severity": "high", "reason": "infrastructure teardown", "action": "deny-exec"}]


def test_manifest_errors():
    with pytest.raises(PolicyError, match='rule "bad": invalid regex: missing \\)'):
        load_policy_text(MANIFEST.replace("'^terraform\\s+destroy'", "'(bad'").replace("no-terraform-destroy", "bad"))
    with pytest.raises(PolicyError, match="unsupported apiVersion"):
        load_policy_text(MANIFEST.replace("anysentry.io/v1alpha1", "anysentry.io/v2"))
    with pytest.raises(PolicyError, match='unknown built-in rule "bind"'):
        load_policy_text(MANIFEST.replace("[bind-listener]", "[bind]"))
    with pytest.raises(PolicyError, match="invalid YAML"):
        load_policy_text("spec: [unclosed")
    with pytest.raises(PolicyError, match="expected one Policy"):
        load_policy_text(MANIFEST + "\n---\n" + MANIFEST)
    with pytest.raises(PolicyError, match="no Policy resource"):
        load_policy_text("apiVersion: v1\nkind: ConfigMap\n")
    with pytest.raises(PolicyError, match='expected kind "Policy"'):
        policy_from_manifest({"apiVersion": "anysentry.io/v1alpha1", "kind": "Source"})
    with pytest.raises(PolicyError, match="spec must be a mapping"):
        policy_from_manifest({"apiVersion": "anysentry.io/v1alpha1", "kind": "Policy", "spec": [1]})


def test_manifest_among_other_documents_and_bare_configs(tmp_path):
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: agents}\n---\n" + MANIFEST
    assert load_policy_text(text)["mode"] == "enforce"
    assert load_policy_text('{"failClosed": true, "rules": [{"name": "j", "match": "x"}]}')["rules"][0]["name"] == "j"
    assert load_policy_text("") == DEFAULT_POLICY
    assert policy_from_manifest({"apiVersion": "anysentry.io/v1alpha1", "kind": "Policy"}) == DEFAULT_POLICY
    path = tmp_path / "policy.yaml"
    path.write_text(MANIFEST)
    assert load_policy_file(path)["failClosed"] is True
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy_file(tmp_path / "missing.yaml")
