"""Notification routes in a cluster: a REST route becomes a NotificationRoute whose receivers read
their URL from Secrets the api creates (and may not read back), a kubectl route appears in REST, a new
URL is a new Secret, DELETE removes the resource. The api runs as its own ServiceAccount with the
Role the operator renders, and the chart's operator may grant that Role."""
from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import uuid

import pytest

from .test_operator_helpers import ROOT, operator_running, wait_for

GRACE_SECS = 2

pytestmark = pytest.mark.k8s

URL1 = 'http://127.0.0.1:9/services/T000/FIRST-SECRET-PATH'
URL2 = 'http://127.0.0.1:9/services/T000/SECOND-SECRET-PATH'
KEY = 'hmac-key-never-shown'
PAGER_URL = 'http://127.0.0.1:9/pager/KUBECTL-SECRET-PATH'


@pytest.fixture
def ns(k8s):
    name = f'routes-{uuid.uuid4().hex[:8]}'
    k8s.kubectl('create', 'namespace', name, check=True)
    yield name
    k8s.kubectl('delete', 'namespace', name, '--wait=false')


def installation(ns: str):
    from anysentry.resources.manifests import validate_object

    resource, errors = validate_object({'apiVersion': 'anysentry.io/v1alpha1', 'kind': 'AnySentry',
                                        'metadata': {'name': 'sentry', 'namespace': ns}, 'spec': {}})
    assert not errors, errors
    return resource


def acting_as(k8s, user: str):
    """A Kube client that impersonates `user` (RBAC decides as for that account)."""
    from kubernetes import config

    from anysentry.operator.kube import Kube

    api_client = config.new_client_from_config(config_file=str(k8s.kubeconfig))
    api_client.set_default_header('Impersonate-User', user)
    return Kube(api_client)


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get('status') or {}).get('conditions') or [] if c['type'] == type_), {})


def decoded(secret: dict, key: str) -> str:
    return base64.b64decode(secret['data'][key]).decode()


async def test_rest_routes_and_kubectl_routes_are_one_state(k8s, ns, store_settings, tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from anysentry.api.app import ApiSettings, build_app
    from anysentry.api.services import Services
    from anysentry.operator import mirror, render_rbac
    from anysentry.operator.kube import Kube, KubeError

    # no AnySentry here, so no operations cycle: unused Secrets are removed only when a route changes.
    # A short grace lets that take the replaced Secret soon; with none, a prune running on a route
    # event could take the new Secret in the moment before the api repoints the route to it.
    with operator_running(k8s, [ns], tmp_path, ANYSENTRY_OPERATOR_SECRET_GRACE_SECS=str(GRACE_SECS)) as operator:
        admin = Kube.from_environment(str(k8s.kubeconfig))
        for manifest in render_rbac.api_rbac(installation(ns), None):
            admin.apply(manifest)
        as_api = acting_as(k8s, f'system:serviceaccount:{ns}:sentry-api')
        services = Services(store_settings=store_settings)
        mirror.attach(services, namespace=ns, kube=as_api)
        client = TestClient(TestServer(build_app(services, ApiSettings(data_dir=tmp_path / 'data'))))
        await client.start_server()

        async def call(method: str, path: str, body=None, expect=200):
            resp = await client.request(method, '/security-center' + path, json=body)
            text = await resp.text()
            assert resp.status == expect, text
            return json.loads(text)['data'], text

        try:
            channel, _ = await call('POST', '/notifications/channels',
                                    {'name': 'Ops Slack', 'webhookUrl': URL1, 'signingKey': KEY}, 201)
            route, text = await call('POST', '/notifications/routes',
                                     {'name': 'Ops Alerts', 'channelIds': [channel['channelId']],
                                      'minSeverity': 'high', 'team': 'secops'}, 201)
            assert route['routeId'] == f'rou_{ns}_ops-alerts'
            assert route['channelIds'] == [f'chn_{ns}_ops-alerts_ops-slack']
            assert 'SECRET-PATH' not in text and KEY not in text

            # REST → resource, its URL and key in a Secret the route owns
            obj = admin.get('NotificationRoute', ns, 'ops-alerts')
            assert obj['spec']['match'] == {'minSeverity': 'high', 'team': 'secops'}
            assert obj['metadata']['labels']['app.kubernetes.io/managed-by'] == 'anysentry-api'
            assert 'SECRET-PATH' not in json.dumps(obj) and KEY not in json.dumps(obj)
            (receiver,) = obj['spec']['receivers']
            first = receiver['webhookUrlSecretRef']['name']
            assert receiver == {'name': 'ops-slack', 'webhookUrlSecretRef': {'name': first, 'key': 'webhookUrl'},
                                'hmacKeySecretRef': {'name': first, 'key': 'hmacKey'}}
            assert re.fullmatch(r'ops-alerts-webhook-[0-9a-f]{8}', first)
            secret = admin.get('Secret', ns, first)
            assert decoded(secret, 'webhookUrl') == URL1 and decoded(secret, 'hmacKey') == KEY
            (owner,) = secret['metadata']['ownerReferences']
            assert (owner['kind'], owner['name'], owner['uid']) == ('NotificationRoute', 'ops-alerts', obj['metadata']['uid'])
            # the operator reads the api's Secret: every receiver resolves, without a warning on the way
            wait_for('the route Ready', lambda: condition(admin.get('NotificationRoute', ns, 'ops-alerts'), 'Ready')
                     .get('reason') == 'Resolved', log=operator.log)
            warnings = k8s.kubectl('get', 'events', '-n', ns, '--field-selector', 'reason=SecretNotFound', '-o', 'json',
                                   check=True, timeout=20)
            assert json.loads(warnings.stdout)['items'] == []
            # the api's account creates Secrets but cannot read or change them
            for attempt in (lambda: as_api.get('Secret', ns, first), lambda: as_api.delete('Secret', ns, first)):
                with pytest.raises(KubeError) as refused:
                    attempt()
                assert refused.value.status == 403

            # kubectl → REST (the URL stays in the Secret, which the api never sees)
            k8s.kubectl('create', 'secret', 'generic', 'pager-hook', '-n', ns, f'--from-literal=url={PAGER_URL}', check=True)
            k8s.kubectl('apply', '-n', ns, '-f', '-', check=True, input=json.dumps(
                {'apiVersion': 'anysentry.io/v1alpha1', 'kind': 'NotificationRoute', 'metadata': {'name': 'pager'},
                 'spec': {'match': {'minSeverity': 'critical'},
                          'receivers': [{'name': 'oncall', 'webhookUrlSecretRef': {'name': 'pager-hook', 'key': 'url'}}]}}))

            async def listed(rid):
                config, text = await call('GET', '/notifications/config')
                return next((r for r in config['routes'] if r['routeId'] == rid), None), text

            for _ in range(100):
                pager, text = await listed(f'rou_{ns}_pager')
                if pager is not None:
                    break
                await asyncio.sleep(0.3)
            assert pager is not None and pager['minSeverity'] == 'critical'
            assert pager['channelIds'] == [f'chn_{ns}_pager_oncall']
            assert 'SECRET-PATH' not in text and KEY not in text

            # a new URL on the channel: a new Secret, the receiver repointed, the old Secret removed
            await asyncio.sleep(GRACE_SECS + 0.5)  # the old Secret is past the grace when the route changes
            await call('PUT', f'/notifications/channels/{channel["channelId"]}', {'webhookUrl': URL2})
            obj = admin.get('NotificationRoute', ns, 'ops-alerts')
            second = obj['spec']['receivers'][0]['webhookUrlSecretRef']['name']
            assert second != first and obj['spec']['receivers'][0]['hmacKeySecretRef']['name'] == second
            secret = admin.get('Secret', ns, second)
            assert decoded(secret, 'webhookUrl') == URL2 and decoded(secret, 'hmacKey') == KEY
            assert secret['metadata']['ownerReferences'][0]['uid'] == obj['metadata']['uid']
            wait_for('the unreferenced Secret removed', lambda: admin.get('Secret', ns, first) is None, log=operator.log)
            assert services.ops.notifications.channels.get(f'chn_{ns}_ops-alerts_ops-slack')['webhookUrl'] == URL2

            # PUT changes the match and keeps the receivers
            updated, _ = await call('PUT', f'/notifications/routes/{route["routeId"]}', {'minSeverity': 'critical'})
            assert updated['minSeverity'] == 'critical' and updated['channelIds'] == route['channelIds']
            obj = admin.get('NotificationRoute', ns, 'ops-alerts')
            assert obj['spec']['match']['minSeverity'] == 'critical'
            assert obj['spec']['receivers'][0]['webhookUrlSecretRef']['name'] == second

            # a route that cannot be a resource is refused, and nothing is written
            resp = await client.post('/security-center/notifications/routes', json={'name': 'nowhere', 'channelIds': []})
            assert resp.status == 400 and 'webhookUrl' in (await resp.json())['message']
            assert admin.get('NotificationRoute', ns, 'nowhere') is None

            # DELETE removes the resource; its Secrets are collected with it
            await call('DELETE', f'/notifications/routes/{route["routeId"]}')
            wait_for('the resource gone', lambda: admin.get('NotificationRoute', ns, 'ops-alerts') is None)
            wait_for('its Secrets collected', lambda: not admin.list(
                'Secret', ns, label_selector='anysentry.io/notification-route=ops-alerts'))
            remaining, _ = await call('GET', '/notifications/config')
            assert [r['routeId'] for r in remaining['routes']] == [f'rou_{ns}_pager']
        finally:
            await client.close()
            as_api.close()
            admin.close()


def test_the_chart_operator_may_grant_the_api_role(k8s, ns):
    """Kubernetes lets an account grant only what it holds: the chart's operator creates the api Role."""
    import yaml

    from anysentry.operator import render_rbac
    from anysentry.operator.kube import KubeError

    from .control_plane import BIN

    release = f'esc-{uuid.uuid4().hex[:6]}'
    out = subprocess.run([str(BIN / 'helm'), 'template', release, str(ROOT / 'charts' / 'anysentry'), '--namespace', ns],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cluster_role = next(d for d in yaml.safe_load_all(out.stdout) if d and d['kind'] == 'ClusterRole')
    k8s.kubectl('apply', '-f', '-', check=True, input=json.dumps(cluster_role))
    try:
        k8s.kubectl('create', 'rolebinding', 'operator', '-n', ns, f'--clusterrole={cluster_role["metadata"]["name"]}',
                    f'--serviceaccount={ns}:operator', check=True)
        as_operator = acting_as(k8s, f'system:serviceaccount:{ns}:operator')
        try:
            role = render_rbac.api_rbac(installation(ns), None)[1]
            created = as_operator.create(role)
            assert created['rules'] == role['rules']
            beyond = {**role, 'metadata': {'name': 'beyond', 'namespace': ns},
                      'rules': [{'apiGroups': [''], 'resources': ['pods/exec'], 'verbs': ['create']}]}
            with pytest.raises(KubeError) as refused:
                as_operator.create(beyond)
            assert refused.value.status == 403
        finally:
            as_operator.close()
    finally:
        k8s.kubectl('delete', 'clusterrole', cluster_role['metadata']['name'])
