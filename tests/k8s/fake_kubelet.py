"""A fake kubelet: just enough node behaviour for Deployments and DaemonSets to become Ready.

It registers Nodes (Ready, with capacity), renews their Leases and Ready condition, marks every pod
bound to one of its nodes Running + Ready, and finishes graceful pod deletion the way a kubelet
would. No container ever runs. Threads are daemons; stop() ends them within a few seconds and, by
default, deletes the nodes so the next test starts from a clean slate.
"""
from __future__ import annotations

import datetime
import logging
import threading

from kubernetes import client, watch

log = logging.getLogger(__name__)
CAPACITY = {'cpu': '32', 'memory': '256Gi', 'pods': '110'}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def _ready_condition() -> dict:
    t = _now()
    return {'type': 'Ready', 'status': 'True', 'reason': 'KubeletReady', 'message': 'fake kubelet',
            'lastHeartbeatTime': t, 'lastTransitionTime': t}


def _pod_ip(uid: str) -> str:
    """A stable, (nearly) unique fake IP per pod, so Endpoints look plausible."""
    n = int(uid.replace('-', '')[:8], 16)
    return f'10.88.{n >> 8 & 0xff}.{n % 254 + 1}'


class FakeKubelet:
    def __init__(self, api_client: client.ApiClient, nodes=('fake-node-0',), heartbeat: float = 5.0):
        self.core = client.CoreV1Api(api_client)
        self.coord = client.CoordinationV1Api(api_client)
        self.nodes = list(nodes)
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> 'FakeKubelet':
        for name in self.nodes:
            self._register(name)
        for target in (self._heartbeat_loop, self._pod_loop):
            t = threading.Thread(target=target, name=f'fake-kubelet-{target.__name__}', daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, delete_nodes: bool = True) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self._threads.clear()
        if delete_nodes:
            for name in self.nodes:
                try:
                    self.core.delete_node(name)
                except client.ApiException as e:
                    if e.status != 404:
                        raise

    def __enter__(self) -> 'FakeKubelet':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- nodes -------------------------------------------------------------------------------------
    def _register(self, name: str) -> None:
        labels = {'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64',
                  'anysentry.dev/fake-node': 'true'}
        try:
            self.core.create_node({'metadata': {'name': name, 'labels': labels}})
        except client.ApiException as e:
            if e.status != 409:
                raise
        self.core.patch_node_status(name, {'status': {
            'conditions': [_ready_condition()],
            'capacity': CAPACITY, 'allocatable': CAPACITY,
            'addresses': [{'type': 'InternalIP', 'address': '127.0.0.1'}, {'type': 'Hostname', 'address': name}],
            'nodeInfo': {'architecture': 'amd64', 'operatingSystem': 'linux', 'kubeletVersion': 'v1.20.2-fake',
                         'kubeProxyVersion': 'v1.20.2-fake', 'containerRuntimeVersion': 'fake://0',
                         'kernelVersion': '', 'osImage': 'fake', 'machineID': '', 'systemUUID': '', 'bootID': ''},
        }})
        self._renew_lease(name)

    def _renew_lease(self, name: str) -> None:
        body = {'metadata': {'name': name, 'namespace': 'kube-node-lease'},
                'spec': {'holderIdentity': name, 'leaseDurationSeconds': 40, 'renewTime': _now()}}
        try:
            self.coord.patch_namespaced_lease(name, 'kube-node-lease', body)
        except client.ApiException as e:
            if e.status != 404:
                raise
            self.coord.create_namespaced_lease('kube-node-lease', body)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat):
            for name in self.nodes:
                try:
                    self._renew_lease(name)
                    self.core.patch_node_status(name, {'status': {'conditions': [_ready_condition()]}})
                except Exception as e:  # the apiserver may be restarting: try again next beat
                    log.debug('fake kubelet heartbeat for %s failed: %s', name, e)

    # --- pods --------------------------------------------------------------------------------------
    def _pod_loop(self) -> None:
        while not self._stop.is_set():
            try:
                # a fresh watch without resourceVersion starts with ADDED for every existing pod,
                # so nothing is missed between streams (or across an apiserver restart)
                for event in watch.Watch().stream(self.core.list_pod_for_all_namespaces,
                                                  timeout_seconds=3, _request_timeout=10):
                    if self._stop.is_set():
                        break
                    if event['type'] in ('ADDED', 'MODIFIED'):
                        try:
                            self._sync_pod(event['object'])
                        except client.ApiException as e:  # e.g. the pod is gone meanwhile
                            log.debug('fake kubelet could not sync a pod: %s', e)
            except Exception as e:
                log.debug('fake kubelet pod watch failed: %s', e)
                self._stop.wait(0.5)

    def _sync_pod(self, pod: client.V1Pod) -> None:
        name, ns = pod.metadata.name, pod.metadata.namespace
        if pod.spec.node_name not in self.nodes:
            return
        if pod.metadata.deletion_timestamp:  # a kubelet confirms graceful deletion once containers stopped
            self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
            return
        if pod.status.phase == 'Running':
            return
        t, ip = _now(), _pod_ip(pod.metadata.uid)
        running = {'running': {'startedAt': t}}
        self.core.patch_namespaced_pod_status(name, ns, {'status': {
            'phase': 'Running', 'hostIP': '127.0.0.1', 'podIP': ip, 'podIPs': [{'ip': ip}],
            'startTime': t,
            'conditions': [{'type': c, 'status': 'True', 'lastTransitionTime': t}
                           for c in ('Initialized', 'Ready', 'ContainersReady', 'PodScheduled')],
            'initContainerStatuses': [
                {'name': c.name, 'image': c.image, 'imageID': '', 'ready': True, 'restartCount': 0,
                 'state': {'terminated': {'exitCode': 0, 'reason': 'Completed', 'startedAt': t, 'finishedAt': t}}}
                for c in pod.spec.init_containers or []],
            'containerStatuses': [
                {'name': c.name, 'image': c.image, 'imageID': '', 'ready': True, 'started': True,
                 'restartCount': 0, 'state': running}
                for c in pod.spec.containers],
        }})
