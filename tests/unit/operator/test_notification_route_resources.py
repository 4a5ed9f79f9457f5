"""REST notification routes as NotificationRoute resources: the mapping both ways, the receivers'
Secrets (named by content, owned by the route), which api Secrets the operator removes, and the api
Role that lets the api do exactly this."""

from __future__ import annotations

import base64
import re
import subprocess
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
import yaml
from test_operator_chart import CHART, _helm
from test_operator_render import installation, k8s_errors

from anysentry.operator import mirror_routes as mr
from anysentry.operator import render
from anysentry.operator.handlers_notification import route_secret_names, unreferenced_secrets
from anysentry.operator.loops import build_engine
from anysentry.ops.standalone import apply_route

NS = "team-a"
URL = "https://hooks.example.com/services/T000/B000/XXXXSECRET"
KEY = "hmac-signing-key-1"

REST_ROUTE = {"routeId": f"rou_{NS}_ops-alerts", "name": "Ops Alerts", "enabled": False,
              "channelIds": ["chn_rest1"], "minSeverity": "high", "kinds": ["incident", "source"],
              "workspacePath": "/srv/agents", "agentId": "agent-1", "collectorId": "node-1", "sourceId": "s" * 150,
              "owner": "o" * 150, "team": "secops", "q": "metadata", "description": "pages the on-call"}


def resource(name: str, spec: dict, **meta) -> dict:
    return {"apiVersion": "anysentry.io/v1alpha1", "kind": "NotificationRoute",
            "metadata": {"name": name, "namespace": NS, "uid": "uid-1", **meta}, "spec": spec}


def receivers_for(name: str, url: str = URL, key: str = KEY) -> list[dict]:
    return [mr.receiver_refs("ops-slack", mr.secret_name(name, "salt", url, key), key)]


# ---- REST record ↔ resource ----------------------------------------------------------------------

def test_rest_route_becomes_a_valid_resource_and_reads_back_as_the_same_route():
    spec = mr.route_spec(REST_ROUTE, receivers_for("ops-alerts"))
    obj = resource("ops-alerts", spec)
    assert k8s_errors(obj) == []
    assert spec["match"] == {"minSeverity": "high", "kinds": ["incident", "source"], "workspace": "/srv/agents",
                             "agent": "agent-1", "collector": "node-1", "source": "s" * 128, "owner": "o" * 120,
                             "team": "secops", "text": "metadata"}
    assert spec["enabled"] is False and spec["description"] == "pages the on-call"
    assert URL not in str(spec) and KEY not in str(spec)

    body = mr.route_body(obj)
    assert body["routeId"] == REST_ROUTE["routeId"]
    assert body["channelIds"] == [f"chn_{NS}_ops-alerts_ops-slack"]
    for key in ("enabled", "minSeverity", "kinds", "workspacePath", "agentId", "collectorId", "team", "q", "description"):
        assert body[key] == REST_ROUTE[key], key
    assert body["sourceId"] == "s" * 128 and body["owner"] == "o" * 120  # cut to the resource's bounds


def test_an_empty_match_leaves_every_field_out():
    spec = mr.route_spec({"channelIds": ["c"], "minSeverity": "", "kinds": []}, receivers_for("r"))
    assert spec["match"] == {} and spec["enabled"] is True and "description" not in spec
    assert k8s_errors(resource("r", spec)) == []


def test_a_replica_holds_the_same_records_the_operator_builds_from_the_resource():
    obj = resource("ops-alerts", mr.route_spec(REST_ROUTE, receivers_for("ops-alerts")))
    operator = build_engine()
    apply_route(operator, obj, {"ops-slack": {"webhookUrl": URL, "signingKey": KEY}})
    replica = build_engine()
    routes = mr.RouteMirror(SimpleNamespace(ops=replica), kube=None, namespace=NS)
    held = routes.hold("ADDED", obj, {"ops-slack": (URL, KEY)})

    fields = [k for k in held if not k.startswith("_") and k not in ("createdAt", "updatedAt")]
    theirs = operator.notifications.routes.get(held["routeId"])
    assert {k: held[k] for k in fields} == {k: theirs[k] for k in fields}
    cid = f"chn_{NS}_ops-alerts_ops-slack"
    mine, op = replica.notifications.channels.get(cid), operator.notifications.channels.get(cid)
    for key in ("name", "enabled", "webhookUrl", "signingKey"):
        assert mine[key] == op[key], key
    assert replica.audit.drain() == []  # a replica taking in a resource audits nothing


def test_a_replica_without_the_url_keeps_the_channel_the_store_gave_it_and_drops_removed_receivers():
    replica = build_engine()
    notifier = replica.notifications
    routes = mr.RouteMirror(SimpleNamespace(ops=replica), kube=None, namespace=NS)
    two = [*receivers_for("pager"), mr.receiver_refs("backup", "pager-backup", "")]
    routes.hold("ADDED", resource("pager", {"receivers": two}), {"ops-slack": (URL, KEY)})
    assert notifier.channels.get(f"chn_{NS}_pager_backup") is None  # its URL is in a Secret it cannot read
    assert notifier.channels.get(f"chn_{NS}_pager_ops-slack")["webhookUrl"] == URL

    routes.hold("MODIFIED", resource("pager", {"receivers": two[1:], "match": {"team": "sre"}}))
    assert notifier.routes.get(f"rou_{NS}_pager")["team"] == "sre"
    assert notifier.channels.get(f"chn_{NS}_pager_ops-slack") is None
    routes.hold("DELETED", resource("pager", {"receivers": two[1:]}))
    assert notifier.routes.get(f"rou_{NS}_pager") is None


def test_ids_map_to_resource_names_and_receivers():
    assert mr.resource_name_of(NS, f"rou_{NS}_ops-alerts") == "ops-alerts"
    assert mr.resource_name_of(NS, "rou_0123456789abcdef") is None
    assert mr.resource_name_of("other", f"rou_{NS}_ops-alerts") is None
    assert mr.receiver_channel(NS, f"chn_{NS}_ops-alerts_ops-slack") == ("ops-alerts", "ops-slack")
    assert mr.receiver_of(NS, "ops-alerts", f"chn_{NS}_ops-alerts_ops-slack") == "ops-slack"
    assert mr.receiver_of(NS, "ops", f"chn_{NS}_ops-alerts_ops-slack") is None
    assert mr.receiver_channel(NS, "chn_rest1") is None


# ---- receivers and their Secrets -------------------------------------------------------------------

def test_secret_names_follow_the_content_and_say_nothing_about_it():
    name = mr.secret_name("ops-alerts", "salt", URL, KEY)
    assert re.fullmatch(r"ops-alerts-webhook-[0-9a-f]{8}", name)
    assert name == mr.secret_name("ops-alerts", "salt", URL, KEY)
    others = {mr.secret_name("ops-alerts", "salt", URL + "2", KEY), mr.secret_name("ops-alerts", "salt", URL, ""),
              mr.secret_name("ops-alerts", "salt2", URL, KEY), mr.secret_name("ops-alerts", "salt", URL, KEY + "x")}
    assert name not in others and len(others) == 4
    long = mr.secret_name("a" * 250, "salt", URL, KEY)
    assert len(long) <= 253 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long)


def test_receiver_secret_is_immutable_owned_by_the_route_and_labelled_as_the_apis():
    owner = resource("ops-alerts", {})
    secret = mr.secret_manifest(owner, mr.secret_name("ops-alerts", "s", URL, KEY), URL, KEY)
    assert k8s_errors(secret) == []
    assert base64.b64decode(secret["data"]["webhookUrl"]).decode() == URL
    assert base64.b64decode(secret["data"]["hmacKey"]).decode() == KEY
    assert secret["immutable"] is True
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "anysentry-api",
                                            "anysentry.io/notification-route": "ops-alerts"}
    assert secret["metadata"]["ownerReferences"] == [{"apiVersion": "anysentry.io/v1alpha1", "kind": "NotificationRoute",
                                                      "name": "ops-alerts", "uid": "uid-1", "controller": True}]
    unsigned = mr.secret_manifest(owner, "x", URL, "")
    assert set(unsigned["data"]) == {"webhookUrl"}
    assert mr.receiver_refs("a", "x", "") == {"name": "a", "webhookUrlSecretRef": {"name": "x", "key": "webhookUrl"}}


def test_receivers_come_from_channels_and_keep_their_references_unless_their_url_changed():
    channels = {"chn_a": {"name": "Ops Slack", "webhookUrl": URL, "signingKey": KEY},
                "chn_b": {"name": "ops slack", "webhookUrl": "https://b.example/x", "signingKey": ""},
                "chn_empty": {"name": "no url", "webhookUrl": "", "signingKey": ""}}
    plan = mr.plan_receivers(NS, "ops", ["chn_a", "chn_b", "chn_empty", "chn_unknown"], channels, {}, {})
    assert [r["name"] for r in plan.receivers] == ["ops-slack", "ops-slack-2"]
    assert plan.given == {"ops-slack": (URL, KEY), "ops-slack-2": ("https://b.example/x", "")}
    assert plan.sources == {"ops-slack": "chn_a", "ops-slack-2": "chn_b"}

    # written once, the route's channels are its own receivers': their references stay as they are
    kubectl_ref = {"name": "ops-slack", "webhookUrlSecretRef": {"name": "my-own-secret", "key": "url"}}
    old = {"ops-slack": kubectl_ref, "ops-slack-2": mr.receiver_refs("ops-slack-2", "ops-webhook-00000000", "")}
    own = [f"chn_{NS}_ops_ops-slack", f"chn_{NS}_ops_ops-slack-2"]
    kept = mr.plan_receivers(NS, "ops", own, {}, old, plan.sources)
    assert kept.receivers == [kubectl_ref, old["ops-slack-2"]] and kept.given == {}
    assert kept.sources == plan.sources
    # ... unless their URL changed: that receiver alone gets a new Secret
    fresh = mr.plan_receivers(NS, "ops", own, {}, old, plan.sources, {"ops-slack": ("https://new.example/y", "k2")})
    assert fresh.given == {"ops-slack": ("https://new.example/y", "k2")}
    assert fresh.receivers[1] == old["ops-slack-2"]
    # naming the source channel again reuses its receiver
    again = mr.plan_receivers(NS, "ops", ["chn_b"], channels, old, plan.sources)
    assert [r["name"] for r in again.receivers] == ["ops-slack-2"]


# ---- the operator removes the api's Secrets nothing references ----------------------------------------

def test_only_unreferenced_api_secrets_past_the_grace_are_removed():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

    def secret(name: str, age: float) -> dict:
        created = (now - timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"metadata": {"name": name, "creationTimestamp": created}}

    routes = [resource("a", {"receivers": [mr.receiver_refs("r", "a-webhook-1", "k")]}),
              resource("b", {"receivers": [{"name": "r", "webhookUrlSecretRef": {"name": "x", "key": "u"},
                                            "hmacKeySecretRef": {"name": "b-webhook-2", "key": "k"}}]})]
    secrets = [secret("a-webhook-1", 600), secret("b-webhook-2", 600), secret("a-webhook-old", 600),
               secret("a-webhook-new", 5)]
    assert unreferenced_secrets(secrets, route_secret_names(routes), now, grace=60) == ["a-webhook-old"]
    assert unreferenced_secrets(secrets, route_secret_names(routes), now, grace=0) == ["a-webhook-old", "a-webhook-new"]


# ---- RBAC ----------------------------------------------------------------------------------------------

def test_api_role_creates_secrets_manages_notification_routes_reads_pods_and_nothing_more():
    role = render.render(installation()).get("Role", "anysentry-api")
    assert role["rules"] == [
        {"apiGroups": ["anysentry.io"], "resources": ["sources", "policies", "objectives", "maintenancewindows"],
         "verbs": ["get", "list", "watch", "create", "patch"]},
        {"apiGroups": ["anysentry.io"], "resources": ["notificationroutes"],
         "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["anysentry-policy"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},  # pod identity (SPEC §7.6)
    ]
    assert k8s_errors(role) == []


def test_the_chart_operator_holds_every_permission_it_grants_the_api():
    """Kubernetes refuses a Role granting more than its creator holds: the chart's ClusterRole must
    cover the api Role the operator renders."""
    out = subprocess.run([_helm(), "template", "rel", str(CHART), "--namespace", "sec"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cluster_role = next(d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "ClusterRole")
    held = {(group, res, verb) for rule in cluster_role["rules"] for group in rule["apiGroups"]
            for res in rule["resources"] for verb in rule["verbs"]}
    for rule in render.render(installation()).get("Role", "anysentry-api")["rules"]:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                for verb in rule["verbs"]:
                    assert (group, res, verb) in held, (group, res, verb)


@pytest.mark.parametrize("text,taken,expected", [("Ops Slack", set(), "ops-slack"), ("Ops Slack", {"ops-slack"}, "ops-slack-2"),
                                                 ("__", set(), "webhook"), ("Ünïcode hook!", set(), "n-code-hook")])
def test_receiver_names_are_dns_labels(text, taken, expected):
    assert mr.receiver_name(text, taken) == expected
