#!/usr/bin/env python3
"""Write the trimmed Kubernetes OpenAPI v2 definitions the operator's unit tests validate against.

The renderers in anysentry/operator/render.py produce Deployments, DaemonSets, Services, RBAC, ...;
tests/unit/operator/test_operator_render.py validates them with `jsonschema` against the official
schemas, without a cluster. This script fetches `/openapi/v2` from a real API server (the local 1.20
control plane of tools/k8s, or $KUBECONFIG's cluster with --kubeconfig) and keeps only the kinds the
operator renders plus every definition they reference, descriptions dropped.

    .venv/bin/python tools/k8s/dump-openapi.py                 # starts a local control plane
    .venv/bin/python tools/k8s/dump-openapi.py --kubeconfig F  # uses a running cluster
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "unit" / "operator" / "k8s_openapi" / "definitions.json"
KINDS = {
    "Deployment": "io.k8s.api.apps.v1.Deployment",
    "DaemonSet": "io.k8s.api.apps.v1.DaemonSet",
    "StatefulSet": "io.k8s.api.apps.v1.StatefulSet",
    "Service": "io.k8s.api.core.v1.Service",
    "ConfigMap": "io.k8s.api.core.v1.ConfigMap",
    "Secret": "io.k8s.api.core.v1.Secret",
    "ServiceAccount": "io.k8s.api.core.v1.ServiceAccount",
    "PersistentVolumeClaim": "io.k8s.api.core.v1.PersistentVolumeClaim",
    "Event": "io.k8s.api.core.v1.Event",
    "Role": "io.k8s.api.rbac.v1.Role",
    "RoleBinding": "io.k8s.api.rbac.v1.RoleBinding",
    "ClusterRole": "io.k8s.api.rbac.v1.ClusterRole",
    "ClusterRoleBinding": "io.k8s.api.rbac.v1.ClusterRoleBinding",
}
_DROP = {"description", "x-kubernetes-patch-strategy", "x-kubernetes-patch-merge-key"}


def _refs(node, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            found.add(ref.rsplit("/", 1)[-1])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in _DROP}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def trim(openapi: dict) -> dict:
    """The definitions of KINDS and everything they reference, without descriptions."""
    definitions = openapi["definitions"]
    keep: set[str] = set()
    todo = list(KINDS.values())
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        found: set[str] = set()
        _refs(definitions[name], found)
        todo.extend(found - keep)
    version = openapi.get("info", {}).get("version", "")
    return {"source": f"/openapi/v2 of a Kubernetes {version} API server (tools/k8s/dump-openapi.py)",
            "kinds": KINDS, "definitions": {name: _strip(definitions[name]) for name in sorted(keep)}}


def fetch(kubeconfig: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from anysentry.operator.kube import Kube

    kube = Kube.from_environment(kubeconfig)
    try:
        return kube.request("GET", "/openapi/v2", timeout=60)
    finally:
        kube.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting the local control plane")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if args.kubeconfig:
        openapi = fetch(args.kubeconfig)
    else:
        sys.path.insert(0, str(ROOT / "tests" / "k8s"))
        from control_plane import ControlPlane  # noqa: E402

        with ControlPlane() as cp:
            openapi = fetch(str(cp.kubeconfig))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    trimmed = trim(openapi)
    out.write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(trimmed['definitions'])} definitions to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
