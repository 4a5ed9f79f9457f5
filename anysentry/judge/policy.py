"""The judge policy (SPEC §11.1): sanitising any input into one canonical shape, its version id
(§4.2), and loading it from a `Policy` custom resource manifest.

Sanitisation coerces and never fails on shape, so a policy that is merely odd still loads; only a
policy that cannot be *used* (a regex RE2 rejects, an unknown built-in to disable, a manifest of
the wrong kind) raises `PolicyError`, whose message names the rule and the problem. The policy is a
plain dict in and out, so the REST layer and the pydantic CRD models can share it."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import yaml

from anysentry.events.ids import hash_id
from anysentry.judge.rules import (
    BUILTIN_NAMES,
    RULE_LIMIT,
    PolicyError,
    Rule,
    compile_rules,
    sanitize_rule,
)

__all__ = [
    "API_VERSION", "DEFAULT_POLICY", "PolicyError", "load_policy_file", "load_policy_text", "policy_from_manifest",
    "policy_version", "sanitize_policy", "validate_policy",
]

API_VERSION = "anysentry.io/v1alpha1"
POLICY_KIND = "Policy"
SPECULATE = ("off", "low", "medium", "high")
PIPELINES = ("full", "l1_only")
MODES = ("monitor", "enforce")
# §11.1 keys, in order: the policy version hashes exactly these (plus disabled built-ins when any)
POLICY_KEYS = ("failClosed", "speculate", "rules", "llm", "deepModel", "agent", "identity")
DISABLED_LIMIT = 64

DEFAULT_POLICY: dict = {
    "failClosed": False,
    "speculate": "off",
    "rules": [],
    "llm": None,
    "deepModel": None,
    "agent": None,
    "identity": {"candidatePipeline": "full"},
    "mode": "monitor",
    "disabledBuiltins": [],
}


def _bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    if isinstance(value, (int, float)):
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    return False


def _text(value: object, limit: int = 2048) -> str:
    if value is None or isinstance(value, (dict, list, tuple, set, bool)):
        return ""
    return str(value).strip()[:limit]


def _choice(value: object, allowed: tuple[str, ...], default: str) -> str:
    text = _text(value).lower()
    return text if text in allowed else default


def _int(value: object, low: int, high: int, default: int) -> int:
    if isinstance(value, bool) or value is None:
        return default
    try:
        number = float(value) if isinstance(value, (int, float, str)) else math.nan
    except ValueError:
        return default
    if not math.isfinite(number):
        return default
    return max(low, min(high, int(number)))


def normalize_llm_url(url: str) -> str:
    """Strip a trailing `/chat/completions`, `/responses` and `/` (§11.1): the base URL is stored."""
    url = url.strip()
    while True:
        before = url
        url = url.rstrip("/")
        for suffix in ("/chat/completions", "/responses"):
            if url.endswith(suffix):
                url = url[: -len(suffix)]
        if url == before:
            return url


def _llm(raw: object) -> dict | None:
    if not isinstance(raw, dict):
        return None
    url = normalize_llm_url(_text(raw.get("url")))
    if not url:
        return None
    return {"url": url, "model": _text(raw.get("model"), 200) or "default", "timeoutS": _int(raw.get("timeoutS"), 1, 600, 60)}


def _deep_model(raw: object) -> dict | None:
    if not isinstance(raw, dict):
        return None
    url = _text(raw.get("url"))
    if not url:
        return None
    return {
        "url": url,
        "model": _text(raw.get("model"), 200) or "default",
        "timeoutS": _int(raw.get("timeoutS"), 1, 3600, 90),
        "contextTokens": _int(raw.get("contextTokens"), 4096, 262144, 32768),
    }


def _agent(raw: object) -> dict | None:
    if not isinstance(raw, dict):
        return None
    binary = _text(raw.get("bin"))
    if not binary:
        return None
    skills = raw.get("skills")
    if isinstance(skills, (list, tuple)):
        skills = [_text(s, 512) for s in skills[:64] if _text(s, 512)]
    else:
        skills = _text(skills, 512)
    return {"bin": binary, "skills": skills}


def _disabled(raw: object) -> list[str]:
    if not isinstance(raw, (list, tuple)):
        return []
    out: list[str] = []
    for item in raw:
        name = _text(item, 80)
        if name and name not in out:
            out.append(name)
        if len(out) >= DISABLED_LIMIT:
            break
    return out


def sanitize_policy(raw: object) -> dict:
    """Any input → the canonical policy dict (§11.1 keys in order, then `mode`, `disabledBuiltins`).

    Idempotent: sanitising a sanitised policy returns an equal dict."""
    src = raw if isinstance(raw, dict) else {}
    rules = []
    raw_rules = src.get("rules")
    for item in raw_rules if isinstance(raw_rules, (list, tuple)) else ():
        rule = sanitize_rule(item)
        if rule is not None:
            rules.append(rule)
            if len(rules) >= RULE_LIMIT:
                break
    identity = src.get("identity") if isinstance(src.get("identity"), dict) else {}
    return {
        "failClosed": _bool(src.get("failClosed")),
        "speculate": _choice(src.get("speculate"), SPECULATE, "off"),
        "rules": rules,
        "llm": _llm(src.get("llm")),
        "deepModel": _deep_model(src.get("deepModel")),
        "agent": _agent(src.get("agent")),
        "identity": {"candidatePipeline": _choice(identity.get("candidatePipeline"), PIPELINES, "full")},
        "mode": _choice(src.get("mode"), MODES, "monitor"),
        "disabledBuiltins": _disabled(src.get("disabledBuiltins")),
    }


def policy_version(policy: object) -> str:
    """`hashId("pol", [compact JSON of the sanitised policy, keys in §11.1 order])` (§4.2).

    `mode` does not change a decision and is left out; disabled built-ins do, and join the hashed
    object only when there are any, so a plain §11.1 policy hashes exactly as the contract says."""
    clean = sanitize_policy(policy)
    hashed = {key: clean[key] for key in POLICY_KEYS}
    if clean["disabledBuiltins"]:
        hashed["disabledBuiltins"] = clean["disabledBuiltins"]
    return hash_id("pol", [orjson.dumps(hashed).decode()])


def validate_policy(policy: object) -> list[Rule]:
    """The compiled custom rules of a policy; `PolicyError` when the policy cannot be used."""
    clean = sanitize_policy(policy)
    for name in clean["disabledBuiltins"]:
        if name not in BUILTIN_NAMES:
            raise PolicyError(f'disabledBuiltins: unknown built-in rule "{name}"')
    return compile_rules(clean["rules"])


def policy_from_manifest(manifest: object) -> dict:
    """A `Policy` custom resource (`anysentry.io/v1alpha1`) → the sanitised, validated policy."""
    if not isinstance(manifest, dict):
        raise PolicyError("a Policy manifest must be a mapping")
    api_version, kind = _text(manifest.get("apiVersion")), _text(manifest.get("kind"))
    if kind != POLICY_KIND:
        raise PolicyError(f'expected kind "{POLICY_KIND}", got "{kind}"')
    if api_version != API_VERSION:
        raise PolicyError(f'unsupported apiVersion "{api_version}" (expected {API_VERSION})')
    spec = manifest.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise PolicyError("Policy spec must be a mapping")
    policy = sanitize_policy(spec)
    validate_policy(policy)
    return policy


def load_policy_text(text: str) -> dict:
    """YAML or JSON text holding one `Policy` manifest, or a bare PolicyConfig mapping."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()
        raise PolicyError("invalid YAML: " + " ".join(line.strip() for line in first[:3])) from None
    if not documents:
        return sanitize_policy({})
    policies = [d for d in documents if isinstance(d, dict) and d.get("kind") == POLICY_KIND]
    if len(policies) > 1:
        raise PolicyError(f"expected one Policy resource, found {len(policies)}")
    if policies:
        return policy_from_manifest(policies[0])
    if len(documents) == 1 and isinstance(documents[0], dict) and "kind" not in documents[0] and "apiVersion" not in documents[0]:
        policy = sanitize_policy(documents[0])
        validate_policy(policy)
        return policy
    raise PolicyError("no Policy resource found (expected apiVersion: anysentry.io/v1alpha1, kind: Policy)")


def load_policy_file(path: str | Path) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    return load_policy_text(text)
