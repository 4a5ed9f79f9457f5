"""Fixtures for tests against a real local Kubernetes control plane (control_plane.py, tools/k8s/).

`k8s` (session): a started ControlPlane — .kubeconfig, .kubectl(*args), .api_client(),
.restart_apiserver(). `fake_kubelet`: two Ready fake nodes that run nothing but report pods Ready.
`k8s_namespace`: a fresh namespace per test. Everything here skips when the binaries are missing.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import uuid

import pytest

from .control_plane import BIN, BUILD_SCRIPT, ControlPlane, missing_binaries, scratch_dir

_MISSING = missing_binaries()
_WORKDIR = None
if not _MISSING:
    # kubernetes.config reads KUBECONFIG once, when it is imported: point it now at the file the
    # `k8s` fixture writes later, before any test module here imports kubernetes.
    _WORKDIR = scratch_dir()
    atexit.register(shutil.rmtree, _WORKDIR, True)
    os.environ['KUBECONFIG'] = str(_WORKDIR / 'kubeconfig')


@pytest.fixture(scope='session', autouse=True)
def _k8s_binaries():
    if _MISSING:
        pytest.skip(f'Kubernetes control-plane binaries missing in {BIN} ({", ".join(_MISSING)}): '
                    f'run {BUILD_SCRIPT}')


@pytest.fixture(scope='session')
def k8s(_k8s_binaries):
    pytest.importorskip('kubernetes')
    cp = ControlPlane(_WORKDIR)
    # if something imported kubernetes before this conftest set KUBECONFIG, repoint its default
    for name in ('kubernetes.config', 'kubernetes.config.kube_config',
                 'kubernetes_asyncio.config', 'kubernetes_asyncio.config.kube_config'):
        if hasattr(sys.modules.get(name), 'KUBE_CONFIG_DEFAULT_LOCATION'):
            sys.modules[name].KUBE_CONFIG_DEFAULT_LOCATION = str(cp.kubeconfig)
    cp.start()
    yield cp
    cp.stop()


@pytest.fixture
def fake_kubelet(k8s):
    from .fake_kubelet import FakeKubelet  # imports kubernetes: only after KUBECONFIG is set
    api = k8s.api_client()
    kubelet = FakeKubelet(api, nodes=('fake-node-0', 'fake-node-1')).start()
    yield kubelet
    kubelet.stop()
    api.close()


@pytest.fixture
def cluster_admin(k8s):
    """A Kubernetes client with the control plane's admin credentials."""
    from anysentry.operator.kube import Kube

    client = Kube.from_environment(str(k8s.kubeconfig))
    yield client
    client.close()


@pytest.fixture
def k8s_namespace(k8s):
    name = f'test-{uuid.uuid4().hex[:8]}'
    k8s.kubectl('create', 'namespace', name, check=True)
    yield name
    k8s.kubectl('delete', 'namespace', name, '--wait=false')


@pytest.fixture
async def receiver():
    """A webhook receiver on 127.0.0.1 recording every POST (`secret_canaries.webhook_receiver`)."""
    from secret_canaries import webhook_receiver

    async with webhook_receiver() as hook:
        yield hook
