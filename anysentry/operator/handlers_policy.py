"""`Policy`: validated by the judge's own compiler, merged per namespace, handed to every api replica.

Every Policy of a namespace is compiled with `anysentry.judge.policy.policy_from_manifest` (RE2, the
judge's rule checks). A valid one is applied: its sanitised policy is kept in the namespace's
ConfigMap `anysentry-policy` under `policy.<name>.json`, and the merge of all applied Policies (in
name order: rules concatenated, built-ins disabled by any, fail-closed or enforce if any says so) is
`policy.json` with its `policyVersion`. An invalid one is reported (`Valid=False`, reason
`InvalidRule` and the compiler's message naming the rule, plus a Warning Event) and never applied:
its last valid version, if any, stays in force. A Policy whose rule names collide with another's is
rejected the same way (`Conflict`). The api replicas poll the ConfigMap (policy_sync.py, every 2 s),
so a valid change reaches each of them within seconds.

Status: Valid, ruleCount, policyVersion (the namespace's merged version, which decisions carry),
decisions of the last 24 h by verdict and the summary of replaying them through the new policy
(both when the installation's store answers)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

import kopf

from anysentry.judge.policy import PolicyError, policy_from_manifest, policy_version, sanitize_policy, validate_policy
from anysentry.operator import events
from anysentry.operator.loops import Installation, Runtime, register_publisher, runtime
from anysentry.operator.render import POLICY_CONFIGMAP, owner_reference, policy_config_map
from anysentry.operator.status import awrite_status, now_utc, with_conditions
from anysentry.resources.models import GROUP, VERSION, DecisionCounts, PolicyStatus, ReplaySummary

log = logging.getLogger("anysentry.operator.policy")

ENTRY_PREFIX, ENTRY_SUFFIX = "policy.", ".json"
MERGED_KEY, VERSION_KEY, NAMES_KEY = "policy.json", "policyVersion", "policies"
_locks: dict[str, asyncio.Lock] = {}


@dataclass
class PolicyResult:
    valid: bool
    reason: str
    message: str
    rule_count: int = 0
    changed: bool = False  # the applied entry changed with this evaluation


@dataclass
class PolicyOutcome:
    entries: dict[str, dict]  # name → applied (sanitised, valid) policy
    merged: dict
    version: str
    results: dict[str, PolicyResult] = field(default_factory=dict)


def entries_from(config_map: dict | None) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for key, value in ((config_map or {}).get("data") or {}).items():
        if key.startswith(ENTRY_PREFIX) and key.endswith(ENTRY_SUFFIX) and key != MERGED_KEY:
            try:
                out[key[len(ENTRY_PREFIX):-len(ENTRY_SUFFIX)]] = json.loads(value)
            except ValueError:
                continue
    return out


def merge_policies(entries: dict[str, dict]) -> dict:
    """One policy from several, in name order."""
    rules, disabled = [], []
    fail_closed, enforce, speculate = False, False, "off"
    llm = deep = agent = None
    identity = {"candidatePipeline": "full"}
    for name in sorted(entries):
        policy = sanitize_policy(entries[name])
        rules += policy["rules"]
        disabled += [d for d in policy["disabledBuiltins"] if d not in disabled]
        fail_closed = fail_closed or policy["failClosed"]
        enforce = enforce or policy["mode"] == "enforce"
        speculate = policy["speculate"] if policy["speculate"] != "off" else speculate
        llm, deep, agent = policy["llm"] or llm, policy["deepModel"] or deep, policy["agent"] or agent
        if policy["identity"]["candidatePipeline"] != "full":
            identity = policy["identity"]
    return sanitize_policy({"failClosed": fail_closed, "speculate": speculate, "rules": rules, "llm": llm,
                            "deepModel": deep, "agent": agent, "identity": identity,
                            "mode": "enforce" if enforce else "monitor", "disabledBuiltins": disabled})


def evaluate_policies(policies: list[dict], previous: dict[str, dict]) -> PolicyOutcome:
    """Compile every Policy; keep the last valid version of an invalid one; drop vanished ones."""
    entries: dict[str, dict] = {}
    results: dict[str, PolicyResult] = {}
    owner_of_rule: dict[str, str] = {}
    for obj in sorted(policies, key=lambda o: o["metadata"]["name"]):
        name = obj["metadata"]["name"]
        try:
            policy = policy_from_manifest(obj)
            clash = next((r["name"] for r in policy["rules"] if r["name"] in owner_of_rule), None)
            if clash is not None:
                raise _Conflict(f'rule "{clash}" is already defined by Policy {owner_of_rule[clash]}')
        except (PolicyError, _Conflict) as exc:
            reason = "Conflict" if isinstance(exc, _Conflict) else "InvalidRule"
            kept = previous.get(name)
            if kept is not None and not any(r["name"] in owner_of_rule for r in kept.get("rules", [])):
                entries[name] = kept
                for rule in kept.get("rules", []):
                    owner_of_rule[rule["name"]] = name
            message = str(exc) + (" (the last valid version stays in force)" if name in entries else " (not applied)")
            results[name] = PolicyResult(False, reason, message, len(entries.get(name, {}).get("rules", [])))
            continue
        entries[name] = policy
        for rule in policy["rules"]:
            owner_of_rule[rule["name"]] = name
        results[name] = PolicyResult(True, "Compiled", f"{len(policy['rules'])} custom rules compile", len(policy["rules"]),
                                     changed=previous.get(name) != policy)
    merged = merge_policies(entries)
    validate_policy(merged)  # each part compiled: the merge does too
    return PolicyOutcome(entries, merged, policy_version(merged), results)


class _Conflict(Exception):
    pass


def config_data(outcome: PolicyOutcome) -> dict[str, str]:
    data = {MERGED_KEY: json.dumps(outcome.merged, sort_keys=True), VERSION_KEY: outcome.version,
            NAMES_KEY: ",".join(sorted(outcome.entries))}
    for name, policy in outcome.entries.items():
        data[f"{ENTRY_PREFIX}{name}{ENTRY_SUFFIX}"] = json.dumps(policy, sort_keys=True)
    return data


def policy_status(obj: dict, outcome: PolicyOutcome, now: datetime, effect: dict | None = None) -> PolicyStatus:
    meta = obj["metadata"]
    generation = int(meta.get("generation") or 0)
    result = outcome.results.get(meta["name"]) or PolicyResult(False, "Pending", "not evaluated yet")
    message = result.message if not result.valid else f"{result.message}; policy {outcome.version} in force"
    effect = effect or {}
    return PolicyStatus(
        observedGeneration=generation,
        conditions=with_conditions(obj, [("Valid", "True" if result.valid else "False", result.reason, message)],
                                   generation, now),
        ruleCount=result.rule_count,
        policyVersion=outcome.version if meta["name"] in outcome.entries else "",
        decisions24h=effect.get("decisions24h"),
        lastReplay=effect.get("lastReplay"),
    )


async def reconcile_policies(kube, rt: Runtime, namespace: str, *, now: datetime | None = None) -> PolicyOutcome:
    """Evaluate every Policy of `namespace`, update the ConfigMap the api replicas follow, write statuses."""
    lock = _locks.setdefault(namespace, asyncio.Lock())
    async with lock:
        now = now or now_utc()
        policies = await kube.list("Policy", namespace)
        current = await kube.get("ConfigMap", namespace, POLICY_CONFIGMAP)
        outcome = evaluate_policies(policies, entries_from(current))
        data = config_data(outcome)
        by_name = {p["metadata"]["name"]: p for p in policies}
        owners = [owner_reference("Policy", name, by_name[name]["metadata"]["uid"]) | {"controller": False}
                  for name in sorted(outcome.entries) if by_name.get(name, {}).get("metadata", {}).get("uid")]
        manifest = policy_config_map(namespace, data)
        if owners:
            manifest["metadata"]["ownerReferences"] = owners
        old_version = ((current or {}).get("data") or {}).get(VERSION_KEY)
        if current is None or (current.get("data") or {}) != data or \
                (current.get("metadata") or {}).get("ownerReferences", []) != owners:
            await kube.apply(manifest)
        inst = rt.installation(namespace)
        if old_version != outcome.version:
            inst.policy_effect = await policy_effect(inst, outcome.merged)
        effect = inst.policy_effect
        for obj in policies:
            name = obj["metadata"]["name"]
            result = outcome.results[name]
            was_valid = _condition(obj, "Valid")
            if not result.valid and was_valid != ("False", result.message):
                await events.aemit(kube, obj, "InvalidPolicy", result.message, events.WARNING)
            elif result.valid and (result.changed or was_valid[0] == "False"):
                await events.aemit(kube, obj, "PolicyApplied",
                                   f"{result.rule_count} custom rules applied; policy version {outcome.version}")
            await awrite_status(kube, "Policy", namespace, name, policy_status(obj, outcome, now, effect))
        return outcome


def _condition(obj: dict, type_: str) -> tuple[str, str]:
    for cond in ((obj.get("status") or {}).get("conditions") or []):
        if cond.get("type") == type_:
            return cond.get("status", ""), cond.get("message", "")
    return "", ""


async def policy_effect(inst: Installation, merged: dict) -> dict:
    """Decisions of the last 24 h by verdict and a replay of them through `merged` (store needed)."""
    store = inst.store
    if store is None:
        return {}
    try:
        from anysentry.events.timefmt import now_ms
        from anysentry.judge.replay import StoredDecision, simulate

        start = now_ms() - 86_400_000
        latest = (f"SELECT * FROM {store.events_table} WHERE at >= {{start:UInt64}} "
                  "ORDER BY decisionUpdatedAt DESC LIMIT 1 BY eventId")
        counts = await store.aquery_dicts(f"SELECT verdict, count() AS n FROM ({latest}) GROUP BY verdict", {"start": start})
        by_verdict = {row["verdict"]: int(row["n"]) for row in counts}
        rows = await store.aquery_dicts(f"SELECT * FROM ({latest}) ORDER BY at DESC LIMIT 500", {"start": start})
        fields = StoredDecision.__dataclass_fields__
        decisions = [StoredDecision(**{k: row.get(k, "" if k != "at" else 0) for k in fields}) for row in rows]
        summary = simulate(merged, decisions, limit=1).get("summary", {})
        return {"decisions24h": DecisionCounts(allow=by_verdict.get("allow", 0), block=by_verdict.get("block", 0),
                                               escalate=by_verdict.get("escalate", 0)),
                "lastReplay": ReplaySummary(at=now_utc(), **{k: int(summary.get(k, 0)) for k in (
                    "evaluatedEvents", "changedEvents", "newBlocks", "removedBlocks", "newEscalations",
                    "removedEscalations")})}
    except Exception as exc:
        log.warning("policy effect of %s unavailable: %s", inst.namespace, exc)
        return {}


@register_publisher
async def publish_policies(rt: Runtime, inst: Installation) -> None:
    """Keeps the namespace's policy converged (a vanished Policy, a lost ConfigMap) and statuses fresh."""
    await reconcile_policies(rt.kube, rt, inst.namespace)


# ---------------------------------------------------------------------------------------------
# kopf


@kopf.on.resume(GROUP, VERSION, "policies")
@kopf.on.create(GROUP, VERSION, "policies")
@kopf.on.update(GROUP, VERSION, "policies")
@kopf.on.delete(GROUP, VERSION, "policies", optional=True)
async def policy_changed(namespace, **_):
    rt = runtime()
    await reconcile_policies(rt.kube, rt, namespace)
