"""The Helm chart's side of pod identity across namespaces: `installation.identityNamespaces` becomes
the AnySentry's `spec.identity.namespaces`, and the operator may make ClusterRoles (for `*`) unless
`rbac.clusterWidePodIdentity` is false."""

from __future__ import annotations

import subprocess

import yaml
from test_operator_chart import CHART, _helm  # noqa: E402 - sibling test module
from test_operator_render import k8s_errors  # noqa: E402

from anysentry.resources.manifests import validate_object


def template(*sets: str) -> list[dict]:
    args = [a for s in sets for a in ("--set", s)]
    out = subprocess.run([_helm(), "template", "rel", str(CHART), "--namespace", "sec", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def installation(docs: list[dict]) -> dict:
    (found,) = [d for d in docs if d["kind"] == "AnySentry"]
    resource, errors = validate_object(found)
    assert errors == [], errors
    return resource


def operator_rules(docs: list[dict]) -> list[dict]:
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert k8s_errors(role) == []
    return role["rules"]


def test_identity_namespaces_reach_the_installation_spec():
    resource = installation(template("installation.create=true", "installation.identityNamespaces={agents,team-b}",
                                     "installation.spec.retentionDays=30"))
    assert resource.spec.identity.namespaces == ["agents", "team-b"] and resource.spec.retentionDays == 30
    assert installation(template("installation.create=true", "installation.identityNamespaces={*}")).spec.identity.namespaces == ["*"]
    assert installation(template("installation.create=true")).spec.identity.namespaces == []  # the release namespace


def test_cluster_roles_only_when_allowed():
    cluster = lambda rules: [r for r in rules if "clusterroles" in r["resources"]]  # noqa: E731
    (rule,) = cluster(operator_rules(template()))
    assert rule["resources"] == ["clusterroles", "clusterrolebindings"] and "escalate" not in rule["verbs"] and "bind" not in rule["verbs"]
    assert cluster(operator_rules(template("rbac.clusterWidePodIdentity=false"))) == []


def test_a_bad_namespace_is_refused_by_the_values_schema():
    out = subprocess.run([_helm(), "template", "rel", str(CHART), "--set", "installation.identityNamespaces={Team_A}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "identityNamespaces" in out.stderr
