"""End-to-end tests in a kind cluster. kind needs a Docker engine and pytest-kind; where either is
missing (as on the project's own machines) this module skips. The local control plane in tests/k8s
covers the same ground without Docker."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip('pytest_kind', reason='pytest-kind is not installed (kind e2e tests need it)')


def _docker_engine_running() -> bool:
    docker = shutil.which('docker')
    if not docker:
        return False
    try:
        return subprocess.run([docker, 'info'], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


if not _docker_engine_running():
    pytest.skip('no Docker engine (`docker info` fails): kind cannot run here', allow_module_level=True)

pytestmark = pytest.mark.e2e
CRDS = Path(__file__).resolve().parents[2] / 'crds'


def test_crds_install_and_become_established(kind_cluster):
    assert sorted(CRDS.glob('*.yaml')), f'no CRD manifests in {CRDS}'
    # `-o name` lists what was applied: customresourcedefinition.apiextensions.k8s.io/<name>
    applied = kind_cluster.kubectl('apply', '-f', str(CRDS), '-o', 'name').split()
    assert applied and all(n.startswith('customresourcedefinition.') for n in applied), applied
    kind_cluster.kubectl('wait', '--for=condition=established', '--timeout=60s', *applied)
    names = kind_cluster.kubectl('get', 'crd', '-o', 'name').split()
    assert set(applied) <= set(names)
