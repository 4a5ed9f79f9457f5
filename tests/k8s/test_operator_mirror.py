"""REST management and kubectl converge: the api (in-process, mirror and policy sync wired as the
lead will wire them) writes Source resources and reads the ones kubectl applies; a Policy applied
with kubectl reaches the api within 5 seconds."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from .test_operator_helpers import operator_running, wait_for

pytestmark = pytest.mark.k8s


@pytest.fixture
def ns(k8s):
    name = f'mirror-{uuid.uuid4().hex[:8]}'
    k8s.kubectl('create', 'namespace', name, check=True)
    yield name
    k8s.kubectl('delete', 'namespace', name, '--wait=false')


async def test_rest_and_kubectl_sources_and_policy_converge(k8s, ns, store_settings, tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from anysentry.api.app import ApiSettings, build_app
    from anysentry.api.services import Services
    from anysentry.operator import mirror, policy_sync
    from anysentry.operator.kube import Kube

    with operator_running(k8s, [ns], tmp_path) as operator:
        kube = Kube.from_environment(str(k8s.kubeconfig))
        services = Services(store_settings=store_settings)
        mirror.attach(services, namespace=ns, kube=kube)
        policy_sync.attach(services, namespace=ns, kube=kube, interval=1.0)
        client = TestClient(TestServer(build_app(services, ApiSettings(data_dir=tmp_path / 'data'))))
        await client.start_server()
        try:
            # REST → CR
            resp = await client.post('/security-center/sources', json={'name': 'CI Forwarder', 'type': 'forwarder',
                                                                       'requireToken': True, 'owner': 'build'})
            assert resp.status == 201, await resp.text()
            created = (await resp.json())['data']
            await services.mirror.flush()
            obj = await asyncio.to_thread(wait_for, 'the Source resource', lambda: kube.get('Source', ns, 'ci-forwarder'),
                                          log=operator.log)
            assert obj['spec']['type'] == 'forwarder' and obj['spec']['owner'] == 'build'
            assert obj['metadata']['annotations']['anysentry.io/source-id'] == created['source']['sourceId']
            assert created['token'] not in json.dumps(obj)
            # the operator keeps the REST-issued token (no Secret of its own) and reports it
            status = await asyncio.to_thread(
                wait_for, 'the operator status', lambda: (kube.get('Source', ns, 'ci-forwarder').get('status') or {}).get('token'),
                log=operator.log)
            assert status['rotationStatus'] == 'fresh' and 'secretRef' not in status
            assert kube.get('Secret', ns, 'ci-forwarder-ingest-token') is None
            # kubectl → REST
            k8s.kubectl('apply', '-n', ns, '-f', '-', check=True, input=json.dumps(
                {'apiVersion': 'anysentry.io/v1alpha1', 'kind': 'Source', 'metadata': {'name': 'falco'},
                 'spec': {'type': 'falco', 'team': 'security'}}))

            async def listed():
                resp = await client.post('/security-center/sources/list', json={'q': 'falco'})
                items = (await resp.json())['data']['items']
                return next((i for i in items if i['sourceId'] == f'src_{ns}_falco'), None)

            deadline = time.monotonic() + 30
            while (item := await listed()) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
            assert item is not None and item['team'] == 'security' and item['type'] == 'falco'
            # the operator's token for the kubectl-made Source is accepted by the api
            secret = await asyncio.to_thread(wait_for, 'the falco token', lambda: kube.get('Secret', ns, 'falco-ingest-token'),
                                             log=operator.log)
            import base64
            token = base64.b64decode(secret['data']['token']).decode()
            deadline = time.monotonic() + 30
            while services.sources.resolve({'token': token}).source is None and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
            assert services.sources.resolve({'token': token}).source['sourceId'] == f'src_{ns}_falco'
            # a Policy applied with kubectl reaches the api within 5 seconds
            started = time.monotonic()
            k8s.kubectl('apply', '-n', ns, '-f', '-', check=True, input=json.dumps(
                {'apiVersion': 'anysentry.io/v1alpha1', 'kind': 'Policy', 'metadata': {'name': 'baseline'},
                 'spec': {'rules': [{'name': 'no-curl-pipe-sh', 'on': 'ToolExec', 'match': r'curl .*\|\s*sh'}]}}))
            while time.monotonic() - started < 5:
                resp = await client.get('/security-center/config')
                rules = (await resp.json())['data']['policy']['rules']
                if [r['name'] for r in rules] == ['no-curl-pipe-sh']:
                    break
                await asyncio.sleep(0.2)
            assert [r['name'] for r in rules] == ['no-curl-pipe-sh'], operator.log()
        finally:
            await client.close()
            kube.close()
