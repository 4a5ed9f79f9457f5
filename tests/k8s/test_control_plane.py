"""The local control plane behaves like a cluster: workloads get Ready, CRDs serve, GC and restarts work."""
from __future__ import annotations

import time

import pytest

kubernetes = pytest.importorskip('kubernetes')
from kubernetes import client  # noqa: E402

pytestmark = pytest.mark.k8s

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.test.anysentry.dev}
spec:
  group: test.anysentry.dev
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def wait_for(what: str, check, timeout: float = 60, interval: float = 0.3):
    """Poll check() until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f'timed out after {timeout}s waiting for {what}')
        time.sleep(interval)


def not_found(read) -> bool:
    try:
        read()
    except client.ApiException as e:
        return e.status == 404
    return False


def test_deployment_and_daemonset_become_ready(k8s, fake_kubelet, k8s_namespace):
    apps = client.AppsV1Api(k8s.api_client())
    ns = k8s_namespace

    def workload(kind: str, name: str) -> dict:
        labels = {'app': name}
        spec = {'selector': {'matchLabels': labels},
                'template': {'metadata': {'labels': labels},
                             'spec': {'containers': [{'name': 'main', 'image': 'example.invalid/none:0'}]}}}
        if kind == 'Deployment':
            spec['replicas'] = 3
        return {'metadata': {'name': name}, 'spec': spec}

    apps.create_namespaced_deployment(ns, workload('Deployment', 'web'))
    apps.create_namespaced_daemon_set(ns, workload('DaemonSet', 'agent'))

    wait_for('3 ready replicas', lambda: apps.read_namespaced_deployment_status('web', ns).status.ready_replicas == 3)
    nodes = len(fake_kubelet.nodes)
    ds = wait_for(f'{nodes} ready daemon pods', lambda: (
        (d := apps.read_namespaced_daemon_set_status('agent', ns)).status.number_ready == nodes and d))
    assert ds.status.desired_number_scheduled == nodes
    pods = client.CoreV1Api(apps.api_client).list_namespaced_pod(ns, label_selector='app=agent').items
    assert sorted(p.spec.node_name for p in pods) == sorted(fake_kubelet.nodes)
    assert all(p.status.phase == 'Running' for p in pods)


def test_crd_applies_and_serves_custom_resources(k8s, k8s_namespace):
    k8s.kubectl('apply', '-f', '-', input=CRD, check=True)
    try:
        k8s.kubectl('wait', '--for=condition=established', '--timeout=60s',
                    'crd/gadgets.test.anysentry.dev', check=True, timeout=70)
        gadget = 'apiVersion: test.anysentry.dev/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {size: %s}\n'
        k8s.kubectl('apply', '-n', k8s_namespace, '-f', '-', input=gadget % 3, check=True)
        custom = client.CustomObjectsApi(k8s.api_client())
        obj = custom.get_namespaced_custom_object('test.anysentry.dev', 'v1', k8s_namespace, 'gadgets', 'g1')
        assert obj['spec'] == {'size': 3}
        # the structural schema is enforced
        bad = k8s.kubectl('apply', '-n', k8s_namespace, '-f', '-', input=(gadget % 0).replace('g1', 'g2'))
        assert bad.returncode != 0 and 'spec.size' in bad.stderr
    finally:
        k8s.kubectl('delete', 'crd', 'gadgets.test.anysentry.dev', '--wait=false')


def test_garbage_collector_deletes_dependents(k8s, k8s_namespace):
    core = client.CoreV1Api(k8s.api_client())
    ns = k8s_namespace
    owner = core.create_namespaced_config_map(ns, {'metadata': {'name': 'owner'}})
    ref = {'apiVersion': 'v1', 'kind': 'ConfigMap', 'name': 'owner', 'uid': owner.metadata.uid}
    core.create_namespaced_config_map(ns, {'metadata': {'name': 'child', 'ownerReferences': [ref]}})
    core.delete_namespaced_config_map('owner', ns)
    wait_for('the garbage collector to delete the child',
             lambda: not_found(lambda: core.read_namespaced_config_map('child', ns)))


def test_apiserver_restart_keeps_data_and_clients(k8s, k8s_namespace):
    core = client.CoreV1Api(k8s.api_client())  # a client made before the restart keeps working after it
    core.create_namespaced_config_map(k8s_namespace, {'metadata': {'name': 'survivor'}, 'data': {'k': 'v'}})
    port = k8s.port
    k8s.restart_apiserver()
    assert k8s.port == port
    assert k8s.kubectl('get', '--raw', '/readyz', check=True).stdout.strip() == 'ok'
    assert core.read_namespaced_config_map('survivor', k8s_namespace).data == {'k': 'v'}
