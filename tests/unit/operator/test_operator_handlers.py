"""The operator's handlers as plain functions, on an in-memory API server (fake_kube.FakeKube)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
from fake_kube import FakeKube

from anysentry.operator import events, handlers_anysentry, handlers_maintenance, handlers_objective, handlers_policy
from anysentry.operator import handlers_source, mirror, policy_sync
from anysentry.operator.kube import AsyncKube
from anysentry.operator.loops import Runtime, Settings, tick
from anysentry.operator.status import write_status
from anysentry.ops.sources import SourceRegistry, token_hash
from anysentry.resources.models import AnySentry, PolicyStatus

NS = "team-a"
NOW = datetime(2030, 1, 10, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _fresh_events():
    events.reset()
    yield
    events.reset()


@pytest.fixture
def kube():
    return FakeKube()


@pytest.fixture
def rt(kube):
    return Runtime(AsyncKube(kube), settings=Settings(tick_secs=1, ops_interval_secs=1, source_check_secs=1))


def resource(kind: str, name: str, spec: dict, **meta) -> dict:
    return {"apiVersion": "anysentry.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": NS, **meta}, "spec": spec}


def rule(name: str, match: str, **extra) -> dict:
    return {"name": name, "on": "ToolExec", "match": match, "verdict": "block", "severity": "high", **extra}


# ---------------------------------------------------------------------------------------------
# Policy


async def test_valid_policy_is_applied_to_the_configmap_with_status(kube, rt):
    kube.put(resource("Policy", "prod", {"mode": "enforce", "rules": [rule("no-rm", r"\brm\s+-rf\b")]}))
    outcome = await handlers_policy.reconcile_policies(rt.kube, rt, NS, now=NOW)
    cm = kube.get("ConfigMap", NS, "anysentry-policy")
    merged = json.loads(cm["data"]["policy.json"])
    assert [r["name"] for r in merged["rules"]] == ["no-rm"] and merged["mode"] == "enforce"
    assert cm["data"]["policyVersion"] == outcome.version.strip() and outcome.version.startswith("pol_")
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "Policy"
    status = kube.get("Policy", NS, "prod")["status"]
    assert status["ruleCount"] == 1 and status["policyVersion"] == outcome.version
    (valid,) = status["conditions"]
    assert (valid["type"], valid["status"], valid["reason"]) == ("Valid", "True", "Compiled")
    assert kube.events("PolicyApplied")


async def test_invalid_policy_is_reported_and_never_applied(kube, rt):
    kube.put(resource("Policy", "prod", {"rules": [rule("no-rm", r"\brm\b")]}))
    first = await handlers_policy.reconcile_policies(rt.kube, rt, NS, now=NOW)
    # the same Policy edited to a regex RE2 rejects
    broken = kube.get("Policy", NS, "prod")
    broken["spec"]["rules"] = [rule("no-rm", r"\brm\b"), rule("bad-one", "curl((")]
    kube.put(broken)
    second = await handlers_policy.reconcile_policies(rt.kube, rt, NS, now=NOW)
    status = kube.get("Policy", NS, "prod")["status"]
    (valid,) = status["conditions"]
    assert valid["status"] == "False" and valid["reason"] == "InvalidRule"
    assert 'rule "bad-one"' in valid["message"] and "missing )" in valid["message"]
    assert second.version == first.version  # the last valid version stays in force
    merged = json.loads(kube.get("ConfigMap", NS, "anysentry-policy")["data"]["policy.json"])
    assert [r["name"] for r in merged["rules"]] == ["no-rm"]
    (warning,) = kube.events("InvalidPolicy")
    assert warning["type"] == "Warning" and "bad-one" in warning["message"]
    # reconciling again posts no second Event for the same problem
    await handlers_policy.reconcile_policies(rt.kube, rt, NS, now=NOW)
    assert len(kube.events("InvalidPolicy")) == 1


async def test_a_new_invalid_policy_is_not_applied_at_all(kube, rt):
    kube.put(resource("Policy", "broken", {"rules": [rule("x", "a(")]}))
    outcome = await handlers_policy.reconcile_policies(rt.kube, rt, NS, now=NOW)
    assert outcome.entries == {} and outcome.merged["rules"] == []
    status = kube.get("Policy", NS, "broken")["status"]
    assert status["conditions"][0]["status"] == "False" and status["ruleCount"] == 0 and "policyVersion" not in status


async def test_policies_merge_in_name_order_and_collisions_are_conflicts(kube, rt):
    kube.put(resource("Policy", "a-base", {"rules": [rule("r1", "one")], "disabledBuiltins": ["suspicious-dns"]}))
    kube.put(resource("Policy", "b-team", {"failClosed": True, "rules": [rule("r2", "two")]}))
    kube.put(resource("Policy", "c-clash", {"rules": [rule("r1", "three")]}))
    outcome = await handlers_policy.reconcile_policies(rt.kube, rt, NS, now=NOW)
    assert [r["name"] for r in outcome.merged["rules"]] == ["r1", "r2"]
    assert outcome.merged["failClosed"] is True and outcome.merged["disabledBuiltins"] == ["suspicious-dns"]
    clash = kube.get("Policy", NS, "c-clash")["status"]["conditions"][0]
    assert clash["reason"] == "Conflict" and "a-base" in clash["message"]
    # a deleted Policy leaves the merge
    kube.delete("Policy", NS, "a-base")
    outcome = await handlers_policy.reconcile_policies(rt.kube, rt, NS, now=NOW)
    assert sorted(outcome.entries) == ["b-team", "c-clash"]


async def test_api_replicas_follow_the_policy_configmap(kube, rt):
    from anysentry.api.services import PolicyState

    state = PolicyState()
    sync = policy_sync.PolicySync(state, kube, NS)
    assert sync.poll_once() is True and state.policy["rules"] == []  # no ConfigMap: the defaults
    kube.put(resource("Policy", "prod", {"rules": [rule("no-curl", r"\bcurl\b")]}))
    outcome = await handlers_policy.reconcile_policies(rt.kube, rt, NS, now=NOW)
    assert sync.poll_once() is True
    assert state.version == outcome.version and [r["name"] for r in state.policy["rules"]] == ["no-curl"]
    assert sync.poll_once() is False  # nothing new: the judge is not rebuilt


# ---------------------------------------------------------------------------------------------
# Source


def source_obj(**spec) -> dict:
    return resource("Source", "observer", {"type": "observer", "requireToken": True, "tokenRotationDays": 30, **spec})


def test_token_plan():
    obj = source_obj()
    assert handlers_source.plan_token(obj, None, NOW).action == "issue"
    token = "ansrc_abc"
    secret = {"data": {"token": base64.b64encode(token.encode()).decode()}}
    ann = {handlers_source.HASH: token_hash(token), handlers_source.ISSUED: "2030-01-01T00:00:00Z"}
    obj["metadata"]["annotations"] = dict(ann)
    assert handlers_source.plan_token(obj, secret, NOW).action is None
    assert handlers_source.plan_token(obj, secret, NOW + timedelta(days=25)) == handlers_source.TokenPlan("rotate", "due")
    obj["metadata"]["annotations"][handlers_source.ROTATE] = "now"
    assert handlers_source.plan_token(obj, secret, NOW) == handlers_source.TokenPlan("rotate", "annotation")
    obj["metadata"]["annotations"] = {**ann, handlers_source.ROTATE: "false"}
    assert handlers_source.plan_token(obj, secret, NOW).action is None
    # 0 days: always overdue, never rotated in a loop
    zero = source_obj(tokenRotationDays=0)
    zero["metadata"]["annotations"] = dict(ann)
    assert handlers_source.plan_token(zero, secret, NOW).action is None
    # issued through REST: no Secret, the REST caller holds the token
    rest = source_obj()
    rest["metadata"]["annotations"] = {**ann, handlers_source.ISSUER: "api"}
    assert handlers_source.plan_token(rest, None, NOW).action is None
    # the Secret lost: issue again; the annotation lost: adopt the Secret's token
    op = source_obj()
    op["metadata"]["annotations"] = {**ann, handlers_source.ISSUER: "operator"}
    assert handlers_source.plan_token(op, None, NOW).action == "issue"
    op["metadata"]["annotations"][handlers_source.HASH] = "0" * 64
    assert handlers_source.plan_token(op, secret, NOW).action == "adopt"


async def test_source_token_is_issued_into_an_owned_secret_and_rotated_by_annotation(kube, rt):
    kube.put(source_obj())
    status = await handlers_source.reconcile_source(rt.kube, rt, kube.get("Source", NS, "observer"), now=NOW)
    secret = kube.get("Secret", NS, "observer-ingest-token")
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert token.startswith("ansrc_")
    source = kube.get("Source", NS, "observer")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == source["metadata"]["uid"]
    ann = source["metadata"]["annotations"]
    assert ann[handlers_source.HASH] == token_hash(token) and token not in json.dumps(source)
    assert status.token.rotationStatus == "fresh" and status.token.secretRef.name == "observer-ingest-token"
    assert status.phase == "Unused" and status.sourceId == f"src_{NS}_observer"
    assert kube.get("Source", NS, "observer")["status"]["token"]["rotationDueAt"] == "2030-02-09T12:00:00Z"
    record = rt.engine(NS).sources.get(f"src_{NS}_observer")
    assert record["tokenHash"] == token_hash(token)
    assert rt.engine(NS).sources.resolve({"token": token}).source is record
    assert kube.events("TokenIssued")

    kube.merge_patch("Source", NS, "observer", {"metadata": {"annotations": {handlers_source.ROTATE: "true"}}})
    later = NOW + timedelta(minutes=5)
    await handlers_source.reconcile_source(rt.kube, rt, kube.get("Source", NS, "observer"), now=later)
    rotated = base64.b64decode(kube.get("Secret", NS, "observer-ingest-token")["data"]["token"]).decode()
    assert rotated != token
    source = kube.get("Source", NS, "observer")
    assert handlers_source.ROTATE not in source["metadata"]["annotations"]
    assert source["metadata"]["annotations"][handlers_source.HASH] == token_hash(rotated)
    assert rt.engine(NS).sources.resolve({"token": token}).rejection == "invalid source token"
    assert rt.engine(NS).sources.resolve({"token": rotated}).rejection is None
    (event,) = kube.events("TokenRotated")
    assert "annotation" in event["message"] and rotated not in event["message"]


async def test_source_token_rotates_when_due_and_status_says_so(kube, rt):
    kube.put(source_obj(tokenRotationDays=1))
    await handlers_source.reconcile_source(rt.kube, rt, kube.get("Source", NS, "observer"), now=NOW)
    first = kube.get("Secret", NS, "observer-ingest-token")["data"]["token"]
    await handlers_source.reconcile_source(rt.kube, rt, kube.get("Source", NS, "observer"), now=NOW + timedelta(hours=2))
    assert kube.get("Secret", NS, "observer-ingest-token")["data"]["token"] == first
    await handlers_source.reconcile_source(rt.kube, rt, kube.get("Source", NS, "observer"), now=NOW + timedelta(days=1, hours=1))
    assert kube.get("Secret", NS, "observer-ingest-token")["data"]["token"] != first
    assert "rotation due" in kube.events("TokenRotated")[0]["message"]
    disabled = source_obj(enabled=False, tokenRotationDays=0)
    disabled["metadata"]["name"] = "off"
    kube.put(disabled)
    status = await handlers_source.reconcile_source(rt.kube, rt, kube.get("Source", NS, "off"), now=NOW)
    assert status.phase == "Disabled" and status.token.rotationStatus == "overdue"
    assert status.conditions[0].reason == "Disabled"


async def test_status_is_written_only_when_it_changed(kube, rt):
    kube.put(source_obj())
    await handlers_source.reconcile_source(rt.kube, rt, kube.get("Source", NS, "observer"), now=NOW)
    before = len(kube.writes("patch-status"))
    for _ in range(3):
        await handlers_source.reconcile_source(rt.kube, rt, kube.get("Source", NS, "observer"), now=NOW + timedelta(seconds=30))
    assert len(kube.writes("patch-status")) == before
    assert write_status(kube, "Policy", NS, "missing", PolicyStatus()) is False


# ---------------------------------------------------------------------------------------------
# Objective, maintenance, summaries


def test_objective_status_mapping():
    obj = resource("Objective", "no-open-incidents", {"metric": "open_incidents", "severity": "critical"}, generation=3)
    record = {"objectiveId": "obj_team-a_no-open-incidents", "status": "breach", "currentValue": 3, "comparator": "lte",
              "threshold": 0, "since": 1_893_456_000_000, "evaluatedAt": 1_893_456_060_000, "evidence": "3 open incidents",
              "alertId": "alt_1"}

    class Alerts:
        def get(self, alert_id):
            return {"status": "open"} if alert_id == "alt_1" else None

    status = handlers_objective.objective_status(obj, record, Alerts(), NOW)
    assert (status.state, status.value, status.comparator, status.threshold) == ("Breach", 3, "lte", 0)
    assert status.alertId == "alt_1" and status.evidence == "3 open incidents" and status.observedGeneration == 3
    assert status.since == datetime(2030, 1, 1, tzinfo=timezone.utc)
    # a steady objective keeps its lastEvaluatedAt (no status churn) for a few minutes
    obj["status"] = status.to_k8s()
    later = dict(record, evaluatedAt=record["evaluatedAt"] + 60_000)
    assert handlers_objective.objective_status(obj, later, Alerts(), NOW).lastEvaluatedAt == status.lastEvaluatedAt
    much_later = dict(record, evaluatedAt=record["evaluatedAt"] + 600_000)
    assert handlers_objective.objective_status(obj, much_later, Alerts(), NOW).lastEvaluatedAt > status.lastEvaluatedAt
    ok = handlers_objective.objective_status(obj, dict(record, status="ok", currentValue=0), Alerts(), NOW)
    assert ok.state == "Ok" and ok.alertId == ""
    assert handlers_objective.objective_status(obj, dict(record, status="disabled"), None, NOW).state == "Disabled"
    missing = handlers_objective.objective_status(obj, None, None, NOW)
    assert missing.conditions[0].reason == "EngineUnavailable" and missing.threshold == 0


async def test_objective_breach_is_written_and_posted_as_an_event(kube, rt):
    # one enabled Source that never sent anything is "down": source_down lte 0 breaches
    kube.put(source_obj())
    await handlers_source.reconcile_source(rt.kube, rt, kube.get("Source", NS, "observer"), now=NOW)
    kube.put(resource("Objective", "sources-up", {"metric": "source_down", "severity": "high"}))
    status = await handlers_objective.reconcile_objective(rt.kube, rt, kube.get("Objective", NS, "sources-up"))
    assert status.state == "Breach" and status.value == 1 and status.evidence == "1 source down"
    stored = kube.get("Objective", NS, "sources-up")["status"]
    assert stored["state"] == "Breach" and stored["alertId"]
    (event,) = kube.events("ObjectiveBreached")
    assert event["type"] == "Warning" and "1 source down" in event["message"]
    alerts = rt.engine(NS).alerts
    assert alerts.get(stored["alertId"])["ruleId"] == "objective.breach"
    # the source is disabled: nothing is down, the objective recovers
    source = kube.get("Source", NS, "observer")
    source["spec"]["enabled"] = False
    kube.put(source)
    await handlers_source.reconcile_source(rt.kube, rt, kube.get("Source", NS, "observer"), now=NOW)
    inst = rt.installation(NS)
    await tick(inst, rt.settings, force=True)
    await handlers_objective.publish_objectives(rt, inst)
    assert kube.get("Objective", NS, "sources-up")["status"]["state"] == "Ok"
    assert kube.events("ObjectiveRecovered")


async def test_maintenance_window_phase_and_suppression(kube, rt):
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    kube.put(resource("MaintenanceWindow", "upgrade", {"target": {"type": "all"}, "startAt": start.isoformat(),
                                                        "endAt": (start + timedelta(hours=1)).isoformat()}))
    engine = rt.engine(NS)
    status = await handlers_maintenance.publish_window(rt.kube, engine, kube.get("MaintenanceWindow", NS, "upgrade"))
    assert status.phase == "Active" and status.windowId == f"mw_{NS}_upgrade"
    assert kube.events("MaintenanceStarted")
    alert = engine.alerts.upsert(rule_id="source.availability", kind="source", dedupe_key="source:x:availability",
                                 severity="high", title="x", description="x", context={"sourceId": "x"})
    assert alert is None  # suppressed while the window is active
    status = await handlers_maintenance.publish_window(rt.kube, engine, kube.get("MaintenanceWindow", NS, "upgrade"))
    assert status.suppressedAlerts == 1
    assert kube.events("AlertsSuppressed")


def test_summaries_are_capped_and_most_severe_first(rt):
    engine = rt.engine(NS)
    severities = ["low", "medium", "high", "critical"] * 6
    for i, severity in enumerate(severities):
        engine.alerts.upsert(rule_id="collector.quality", kind="collector", dedupe_key=f"c{i}", severity=severity,
                             title=f"alert {i}", description="d", context={"sourceId": "s1" if i % 2 else "s2"})
    summary = handlers_anysentry.alerts_summary(engine)
    assert summary.active == 24 and summary.critical == 6 and summary.high == 6
    assert len(summary.mostSevere) == 5 and all(a.severity == "critical" for a in summary.mostSevere)
    per_source = handlers_source.open_alerts(engine, sourceId="s1")
    assert per_source.total == 12 and len(per_source.items) == 10
    assert per_source.items[0].severity == "critical" and per_source.items[-1].severity in ("medium", "low")
    engine.incidents.put({"incidentId": "inc1", "status": "open", "severity": "high", "title": "t", "updatedAt": 1})
    engine.incidents.put({"incidentId": "inc2", "status": "resolved", "severity": "critical", "updatedAt": 1})
    incidents = handlers_anysentry.incidents_summary(engine)
    assert incidents.open == 1 and incidents.high == 1 and incidents.mostSevere[0].incidentId == "inc1"


def test_installation_is_ready_only_when_every_part_is():
    obj = {"apiVersion": "anysentry.io/v1alpha1", "kind": "AnySentry",
           "metadata": {"name": "as", "namespace": NS, "uid": "u", "generation": 2},
           "spec": {"storage": {"clickhouse": {"url": "http://ch:8123"}}, "api": {"replicas": 2}}}
    resource_ = AnySentry.model_validate(obj)
    engine = Runtime(AsyncKube(FakeKube())).engine(NS)
    ready_children = {"api": {"spec": {"replicas": 2}, "status": {"readyReplicas": 2}},
                      "ui": {"spec": {"replicas": 1}, "status": {"readyReplicas": 1}},
                      "collector": {"status": {"desiredNumberScheduled": 2, "numberReady": 2}}}
    status = handlers_anysentry.installation_status(obj, resource_, ready_children, True, engine, NOW)
    conditions = {c.type: c for c in status.conditions}
    assert {t: c.status for t, c in conditions.items()} == {"StorageReady": "True", "ApiAvailable": "True",
                                                             "CollectorAvailable": "True", "Ready": "True"}
    assert status.api.ready == "2/2" and status.collector.ready == "2/2" and status.observedGeneration == 2
    assert status.endpoints.api == f"http://as-api.{NS}.svc:29653/security-center"
    half = dict(ready_children, api={"spec": {"replicas": 2}, "status": {"readyReplicas": 1}})
    conditions = {c.type: c for c in handlers_anysentry.installation_status(obj, resource_, half, True, engine, NOW).conditions}
    assert conditions["ApiAvailable"].status == "False" and conditions["Ready"].status == "False"
    assert "api" in conditions["Ready"].message
    conditions = {c.type: c for c in handlers_anysentry.installation_status(obj, resource_, ready_children, False, engine, NOW).conditions}
    assert conditions["StorageReady"].reason == "Unreachable" and conditions["Ready"].status == "False"


async def test_installation_children_are_applied_and_switched_off_parts_deleted(kube, rt):
    obj = kube.put({"apiVersion": "anysentry.io/v1alpha1", "kind": "AnySentry", "metadata": {"name": "as", "namespace": NS},
                    "spec": {}})
    await handlers_anysentry.apply_installation(rt.kube, AnySentry.model_validate(obj), rt)
    kinds = {(k, n) for (k, ns, n) in kube.objects if ns == NS}
    assert {("Deployment", "as-api"), ("DaemonSet", "as-collector"), ("StatefulSet", "as-clickhouse"),
            ("Secret", "as-clickhouse-credentials"), ("Source", "as-collector"), ("Role", "as-api")} <= kinds
    password = kube.get("Secret", NS, "as-clickhouse-credentials")["stringData"]["password"]
    obj["spec"] = {"collector": {"enabled": False}, "api": {"replicas": 4}}
    obj = kube.put(obj)
    await handlers_anysentry.apply_installation(rt.kube, AnySentry.model_validate(obj), rt)
    assert kube.get("DaemonSet", NS, "as-collector") is None
    assert kube.get("Deployment", NS, "as-api")["spec"]["replicas"] == 4
    assert kube.get("Secret", NS, "as-clickhouse-credentials")["stringData"]["password"] == password  # made once


# ---------------------------------------------------------------------------------------------
# mirror


def test_rest_sources_become_source_resources_and_back(kube):
    registry = SourceRegistry()
    record, token = registry.create({"name": "CI Forwarder", "type": "forwarder", "requireToken": True,
                                     "tags": ["ci", "ci", ""], "owner": "build"})
    mirror.write_source(kube, NS, record, token_issued=True)
    (obj,) = kube.list("Source", NS)
    assert obj["metadata"]["name"] == "ci-forwarder"
    ann = obj["metadata"]["annotations"]
    assert ann[handlers_source.SOURCE_ID] == record["sourceId"] and ann[handlers_source.ISSUER] == "api"
    assert ann[handlers_source.HASH] == token_hash(token) and token not in json.dumps(obj)
    assert obj["spec"] == {"type": "forwarder", "enabled": True, "requireToken": True, "owner": "build", "tags": ["ci"]}
    # another replica (or a restart) reads the resources into its registry under the same id and token
    other = SourceRegistry()
    kube.put(resource("Source", "kubectl-made", {"type": "otel"}))
    mirror.read_sources(kube, NS, other)
    assert other.get(record["sourceId"])["name"] == "ci-forwarder"
    assert other.resolve({"token": token}).source["sourceId"] == record["sourceId"]
    assert other.get(f"src_{NS}_kubectl-made")["type"] == "otel"
    # the same record written again lands on the same resource
    record["owner"] = "release"
    mirror.write_source(kube, NS, record)
    (obj,) = [o for o in kube.list("Source", NS) if o["metadata"]["name"] == "ci-forwarder"]
    assert obj["spec"]["owner"] == "release"


def test_mirror_does_not_echo_what_it_applies(kube):
    class Services:
        sources = SourceRegistry()
        ops = None

    services = Services()
    m = mirror.SourceMirror(services, kube, NS)
    services.sources.change_listeners.append(m.on_source_change)
    m.apply("Source", "ADDED", kube.put(resource("Source", "from-kubectl", {"type": "custom"})))
    assert services.sources.get(f"src_{NS}_from-kubectl") is not None
    assert not kube.writes("apply")  # applying a watched object writes nothing back
    services.sources.upsert(f"src_{NS}_from-kubectl", {"owner": "someone"})  # a REST change is written
    assert kube.get("Source", NS, "from-kubectl")["spec"]["owner"] == "someone"
    m.apply("Source", "DELETED", kube.get("Source", NS, "from-kubectl"))
    assert services.sources.get(f"src_{NS}_from-kubectl") is None


def test_write_policy_leaves_out_rules_of_other_policies(kube):
    kube.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "anysentry-policy", "namespace": NS},
              "data": {"policy.team.json": json.dumps({"rules": [rule("team-rule", "x")]})}})
    mirror.write_policy(kube, NS, {"mode": "enforce", "rules": [rule("team-rule", "x"), rule("mine", "y")]})
    obj = kube.get("Policy", NS, "default")
    assert [r["name"] for r in obj["spec"]["rules"]] == ["mine"] and obj["spec"]["mode"] == "enforce"
