"""The Helm chart: its CRDs are the checked-in ones, it renders, and what it renders is valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_operator_render import k8s_errors

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "anysentry"
HELM = Path.home() / ".cache" / "anysentry-k8s" / "bin" / "helm"


def test_chart_crds_equal_the_checked_in_crds():
    checked_in = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert checked_in
    for name in checked_in:
        assert (CHART / "crds" / name).read_text() == (ROOT / "crds" / name).read_text(), f"charts/anysentry/crds/{name} is stale"
    extra = sorted(p.name for p in (CHART / "crds").glob("*.yaml")) 
    assert set(extra) - set(checked_in) == {"kopf-peering.yaml"}


def _helm() -> str:
    helm = str(HELM) if HELM.exists() else shutil.which("helm")
    if not helm:
        pytest.skip("helm not found (make k8s puts it in ~/.cache/anysentry-k8s/bin)")
    return helm


@pytest.mark.parametrize("args", [
    [],
    ["--set", "installation.create=true", "--set", "operator.watchNamespaces={team-a,team-b}"],
    ["--set", "rbac.create=false", "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=existing"],
])
def test_chart_renders_valid_objects(args):
    out = subprocess.run([_helm(), "template", "rel", str(CHART), "--namespace", "sec", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert "Deployment" in kinds
    for doc in docs:
        assert k8s_errors(doc) == [], (doc["kind"], doc["metadata"]["name"])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "operator"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    if "installation.create=true" in args:
        assert "--namespace=team-a" in container["args"] and "AnySentry" in kinds
    if "rbac.create=false" in args:
        assert "ClusterRole" not in kinds and deployment["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    else:
        assert {"ClusterRole", "ClusterRoleBinding", "ServiceAccount"} <= kinds or "rbac.create=false" in args


def test_chart_values_are_checked_by_the_schema():
    out = subprocess.run([_helm(), "template", "rel", str(CHART), "--set", "operator.replicas=zero"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "replicas" in out.stderr
