"""Pod identity against a real API server (SPEC §7.6): the watcher lists and follows Pods into the
index (UID and container ids from the status subresource), drops deleted ones, survives an API server
restart, and `pods.attach` enriches `/ingest` in an api wired as `anysentry api` wires it."""
from __future__ import annotations

import asyncio
import json
import uuid

import orjson
import pytest

from .test_operator_helpers import wait_for

pytestmark = pytest.mark.k8s

CONTAINER_ID = '7' * 16 + '0123456789abcdef' * 3


def create_namespace(k8s, name: str) -> None:
    """A namespace ready for Pods: admission refuses them until its `default` ServiceAccount exists."""
    k8s.kubectl('create', 'namespace', name, check=True)
    wait_for('the default service account', lambda: k8s.kubectl('get', 'serviceaccount', 'default', '-n', name).returncode == 0,
             timeout=30)


@pytest.fixture
def ns(k8s):
    name = f'pods-{uuid.uuid4().hex[:8]}'
    create_namespace(k8s, name)
    yield name
    k8s.kubectl('delete', 'namespace', name, '--wait=false')


@pytest.fixture
def kube(cluster_admin):
    return cluster_admin


def create_pod(kube, ns: str, name: str, labels: dict) -> dict:
    """A Pod object (no node: nothing runs it, and deleting it takes effect at once)."""
    return kube.create({'apiVersion': 'v1', 'kind': 'Pod',
                        'metadata': {'name': name, 'namespace': ns, 'labels': labels},
                        'spec': {'automountServiceAccountToken': False, 'containers': [{'name': 'agent', 'image': 'registry.local/coder:1'},
                                                {'name': 'proxy', 'image': 'registry.local/proxy:1'}]}}, ns)


def set_container_id(kube, ns: str, name: str, container_id: str) -> None:
    status = {'name': 'agent', 'image': 'registry.local/coder:1', 'imageID': '', 'ready': True, 'restartCount': 0,
              'containerID': f'containerd://{container_id}', 'state': {'running': {'startedAt': '2025-06-01T10:00:00Z'}}}
    kube.merge_patch('Pod', ns, name, {'status': {'containerStatuses': [status]}}, subresource='status')


def test_the_watcher_follows_pods_into_the_index(k8s, ns, kube):
    from anysentry.events.workloads import WorkloadIndex
    from anysentry.operator.pods import PodWatcher

    before = create_pod(kube, ns, 'coder-0', {'anysentry.io/workload-kind': 'agent'})
    second = create_pod(kube, ns, 'coder-1', {'anysentry.io/workload-kind': 'agent'})
    elsewhere = f'{ns}-other'
    create_namespace(k8s, elsewhere)
    try:
        outside = create_pod(kube, elsewhere, 'coder-0', {'anysentry.io/workload-kind': 'agent'})
        index = WorkloadIndex(cluster_id='test')
        watcher = PodWatcher(index, kube, (ns,), watch_timeout=1, max_backoff=1.0, page_size=1).start()
        try:
            assert watcher.ready.wait(20), 'the first listing did not complete'
            found = index.match(before['metadata']['uid'])  # listed, one pod a page
            assert found is not None and found.workspace_path == f'{ns}/coder-0'
            assert index.match(second['metadata']['uid']).workspace_path == f'{ns}/coder-1'
            assert index.match(outside['metadata']['uid']) is None  # a namespace not watched

            later = create_pod(kube, ns, 'research', {'anysentry.io/agent-id': 'researcher'})
            uid = later['metadata']['uid']
            found = wait_for('the watched pod', lambda: index.match(uid), timeout=20)
            assert found.classification == 'probable_agent' and found.agent_scope_id == 'researcher'

            set_container_id(kube, ns, 'research', CONTAINER_ID)
            found = wait_for('the container id', lambda: index.match(CONTAINER_ID[:12]), timeout=20)
            assert found.agent_instance_id == f'k8s:{uid}:agent' and index.match(CONTAINER_ID) is found

            kube.merge_patch('Pod', ns, 'research', {'metadata': {'labels': {'anysentry.io/workload-kind': 'non-agent'}}})
            wait_for('the relabelled pod', lambda: getattr(index.match(uid), 'classification', '') == 'non_agent', timeout=20)

            kube.delete('Pod', ns, 'research')
            wait_for('the deleted pod to leave', lambda: index.match(uid) is None and index.match(CONTAINER_ID) is None,
                     timeout=20)
            assert index.match(before['metadata']['uid']) is not None
            # watches the server ends (every second here) resume from the last resourceVersion seen
            started = watcher.watches
            wait_for('a resumed watch', lambda: watcher.watches >= started + 2, timeout=20)
            last = create_pod(kube, ns, 'last', {'anysentry.io/workload-kind': 'agent'})
            wait_for('a pod after resumed watches', lambda: index.match(last['metadata']['uid']), timeout=20)
            assert watcher.errors == 0 and watcher.listings == 1
        finally:
            watcher.stop()
    finally:
        k8s.kubectl('delete', 'namespace', elsewhere, '--wait=false')


def test_the_watcher_comes_back_after_an_api_server_restart(k8s, ns, kube):
    from anysentry.events.workloads import WorkloadIndex
    from anysentry.operator.pods import PodWatcher

    index = WorkloadIndex()
    watcher = PodWatcher(index, kube, None, watch_timeout=30, max_backoff=1.0).start()  # every namespace
    try:
        assert watcher.ready.wait(20)
        k8s.restart_apiserver(down_for=1)
        after = create_pod(kube, ns, 'after-restart', {'anysentry.io/workload-kind': 'agent'})
        wait_for('a pod created after the restart', lambda: index.match(after['metadata']['uid']), timeout=40)
    finally:
        watcher.stop()


async def test_attach_enriches_ingest_in_a_cluster(k8s, ns, kube, store_settings, tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from anysentry.api.app import ApiSettings, build_app
    from anysentry.api.services import Services
    from anysentry.operator import pods

    pod = await asyncio.to_thread(create_pod, kube, ns, 'coder-0', {'anysentry.io/workload-kind': 'agent'})
    uid = pod['metadata']['uid']
    services = Services(store_settings=store_settings)
    environ = {'ANYSENTRY_KUBE_NAMESPACE': ns, 'ANYSENTRY_IDENTITY_NAMESPACES': ns, 'ANYSENTRY_CLUSTER_ID': 'ci'}
    assert pods.attach(services, kube=kube, environ={**environ, 'ANYSENTRY_KUBE_ENRICH': 'off'}) is None
    assert services.pipeline.workloads is None
    watcher = pods.attach(services, kube=kube, environ=environ)
    assert watcher is not None and services.pipeline.workloads is watcher.index
    client = TestClient(TestServer(build_app(services, ApiSettings(data_dir=tmp_path / 'data'))))
    await client.start_server()  # runs the startup hook: the first listing is in before serving
    try:
        line = json.dumps({'identity': {'agent': 'python3', 'task': '7', 'session': uid},
                           'event': {'ToolExec': {'pid': 7, 'argv': ['git', 'push'], 'cwd': '/src'}}})
        resp = await client.post('/security-center/ingest', json={'line': line})
        answer = (await resp.json())['data']
        assert answer['accepted'] is True, answer
        assert await services.writer.sync()
        resp = await client.post('/security-center/events/list', json={'eventId': answer['eventId']})
        item = orjson.loads(await resp.read())['data']['items'][0]
        assert (item['agentId'], item['sessionId'], item['workspacePath']) == ('coder-0', f'k8s:{uid}:agent', f'{ns}/coder-0')
        assert item['attribution']['source'] == 'kubernetes'
        assert item['attribution']['physicalWorkloadId'] == f'k8s:ci:{ns}/coder-0/agent'
    finally:
        await client.close()

