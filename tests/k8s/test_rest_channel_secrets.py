"""A channel created through REST in a cluster: the api (as its own ServiceAccount, create-only on
Secrets) puts its URL and key into a Secret and stores the channel Secret-sourced without them (every
row of every table, every version, is searched for the canaries); another replica without the values
can still route to it (the receiver references the channel's Secret); the operator's cycle reads the
Secret, holds the values, and delivers to a real receiver on 127.0.0.1 signed with the key, including a
resolve the replica handed over. The operator's pruning of unreferenced api Secrets leaves it alone."""
from __future__ import annotations

import base64
import json
import uuid

import pytest
from secret_canaries import raw_rows, signed_by

from .test_notification_route_mirror import acting_as, installation
from .test_operator_helpers import apply_crds

pytestmark = pytest.mark.k8s


async def test_rest_channel_values_go_to_a_secret_and_the_operator_delivers(
        k8s, k8s_namespace, store, store_settings, receiver, tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from anysentry.api.app import ApiSettings, build_app
    from anysentry.api.services import Services
    from anysentry.operator import mirror, render_rbac
    from anysentry.operator.handlers_notification import (API_SECRETS, deliver_handed_over, hold_channels,
                                                          publish_routes)
    from anysentry.operator.kube import Kube
    from anysentry.operator.loops import Installation, Runtime, build_engine, cycle
    from anysentry.ops.sync import BookSync

    ns = k8s_namespace
    token = f'CANARY-{uuid.uuid4().hex}'
    key = f'hmac-canary-{uuid.uuid4().hex}'
    url = f'http://127.0.0.1:{receiver.port}/hooks/{token}'
    apply_crds(k8s)
    admin = Kube.from_environment(str(k8s.kubeconfig))
    for manifest in render_rbac.api_rbac(installation(ns), None):
        admin.apply(manifest)
    as_api = acting_as(k8s, f'system:serviceaccount:{ns}:sentry-api')

    async def replica():
        services = Services(store_settings=store_settings, operations='operator')
        mirror.attach(services, namespace=ns, kube=as_api)
        client = TestClient(TestServer(build_app(services, ApiSettings(data_dir=tmp_path / 'data'))))
        await client.start_server()
        return services, client

    async def call(client, method: str, path: str, body=None, expect=200):
        resp = await client.request(method, '/security-center' + path, json=body)
        text = await resp.text()
        assert resp.status == expect, text
        assert token not in text and key not in text
        return json.loads(text)['data']

    # replica A creates the channel: its values go into a Secret, the store gets the channel without them
    services, client = await replica()
    try:
        item = await call(client, 'POST', '/notifications/channels',
                          {'name': 'Pager', 'webhookUrl': url, 'signingKey': key}, 201)
        assert item['endpointPreview'] == f'http://127.0.0.1:{receiver.port}/...' and item['signingKeyConfigured']
        cid = item['channelId']
        record = services.ops.notifications.channel(cid)
        assert record['source'] == 'secret'
        name = record['secretRef']['webhookUrl']['name']
        assert record['secretRef'] == {'webhookUrl': {'name': name, 'key': 'webhookUrl'},
                                       'signingKey': {'name': name, 'key': 'hmacKey'}}
        secret = admin.get('Secret', ns, name)
        assert base64.b64decode(secret['data']['webhookUrl']).decode() == url
        assert base64.b64decode(secret['data']['hmacKey']).decode() == key
        assert name not in [s['metadata']['name'] for s in admin.list('Secret', ns, label_selector=API_SECRETS)]
        await services.flush_state()
    finally:
        await client.close()
    dump = raw_rows(store, store_settings.database)
    assert cid in dump and token not in dump and key not in dump

    # replica B holds the channel without its values and routes to it: the receiver names its Secret
    services, client = await replica()
    try:
        assert 'webhookUrl' not in services.ops.notifications.channel(cid)
        route = await call(client, 'POST', '/notifications/routes',
                           {'name': 'Pager Route', 'channelIds': [cid], 'minSeverity': 'high'}, 201)
        (receiver_spec,) = admin.get('NotificationRoute', ns, 'pager-route')['spec']['receivers']
        assert receiver_spec['webhookUrlSecretRef'] == {'name': name, 'key': 'webhookUrl'}
        assert receiver_spec['hmacKeySecretRef'] == {'name': name, 'key': 'hmacKey'}

        # the operator's cycle reads the Secret, holds the values and delivers, signed with the key
        operator = Installation(ns, engine=build_engine(store), store=store)
        operator.sync = BookSync(store, operator.engine.books)
        rt = Runtime(admin)
        rt.publishers = [publish_routes, hold_channels, deliver_handed_over]
        await cycle(rt, operator)
        notifier = operator.engine.notifications
        assert notifier.channel(cid)['webhookUrl'] == url and notifier.channel(cid)['signingKey'] == key
        alert = operator.engine.alerts.upsert(rule_id='incident.open', kind='incident', dedupe_key=f'canary:{ns}',
                                              severity='critical', title='Agent read a credential',
                                              description='canary alert')
        await notifier.drain()
        (path, headers, body), = receiver.received
        assert path == f'/hooks/{token}' and signed_by(key, headers, body)
        assert json.loads(body)['route']['routeId'] == route['routeId'] and json.loads(body)['action'] == 'opened'
        await cycle(rt, operator)  # flushes the alert for the replica

        # a resolve replica B serves is handed over; the next cycle sends it
        await services.book_sync.refresh()
        await call(client, 'PUT', f'/alerts/{alert["alertId"]}', {'status': 'resolved'})
        await services.ops.notifications.drain()
        assert len(receiver.received) == 1
        await services.flush_state()
        await cycle(rt, operator)
        await notifier.drain()
        assert len(receiver.received) == 2
        path, headers, body = receiver.received[1]
        assert path == f'/hooks/{token}' and signed_by(key, headers, body) and json.loads(body)['action'] == 'resolved'
        await cycle(rt, operator)
        assert admin.get('Secret', ns, name) is not None  # never pruned: a channel references it
    finally:
        await client.close()

    dump = raw_rows(store, store_settings.database)
    assert token not in dump and key not in dump
    admin.close()
    as_api.close()


async def test_a_channel_secret_that_new_values_superseded_is_removed_once_past_the_grace(
        k8s, k8s_namespace, store, store_settings, tmp_path, monkeypatch):
    """A new URL and key for a REST channel go into a new Secret; the operator deletes the old one once
    nothing references it, but never before its channel book holds the store's channels."""
    from aiohttp.test_utils import TestClient, TestServer

    from anysentry.api.app import ApiSettings, build_app
    from anysentry.api.services import Services
    from anysentry.operator import handlers_notification, mirror, render_rbac
    from anysentry.operator.kube import Kube
    from anysentry.operator.loops import Installation, Runtime, build_engine, cycle
    from anysentry.ops.sync import BookSync

    ns = k8s_namespace
    apply_crds(k8s)
    admin = Kube.from_environment(str(k8s.kubeconfig))
    for manifest in render_rbac.api_rbac(installation(ns), None):
        admin.apply(manifest)
    as_api = acting_as(k8s, f'system:serviceaccount:{ns}:sentry-api')
    services = Services(store_settings=store_settings, operations='operator')
    mirror.attach(services, namespace=ns, kube=as_api)
    client = TestClient(TestServer(build_app(services, ApiSettings(data_dir=tmp_path / 'data'))))
    await client.start_server()

    async def call(method: str, path: str, body: dict, expect: int = 200) -> dict:
        resp = await client.request(method, '/security-center' + path, json=body)
        assert resp.status == expect, await resp.text()
        return (await resp.json())['data']

    def secret_of(cid: str) -> str:
        return services.ops.notifications.channel(cid)['secretRef']['webhookUrl']['name']

    try:
        cid = (await call('POST', '/notifications/channels',
                          {'name': 'Pager', 'webhookUrl': 'http://127.0.0.1:9/old', 'signingKey': 'old-key'}, 201))['channelId']
        first = secret_of(cid)
        await call('PUT', f'/notifications/channels/{cid}', {'webhookUrl': 'http://127.0.0.1:9/new', 'signingKey': 'new-key'})
        second = secret_of(cid)
        assert second != first and admin.get('Secret', ns, first) is not None
        await services.flush_state()
    finally:
        await client.close()

    rt = Runtime(admin)
    rt.publishers = [handlers_notification.publish_routes]
    operator = Installation(ns, engine=build_engine(store), store=store)
    operator.sync = BookSync(store, operator.engine.books)
    await cycle(rt, operator)  # the default grace: both Secrets are a moment old
    assert admin.get('Secret', ns, first) is not None

    monkeypatch.setattr(handlers_notification, 'SECRET_GRACE_SECS', 0.0)
    unread = Installation(ns, engine=build_engine(store), store=store)
    unread.sync = BookSync(store, unread.engine.books)
    await handlers_notification.publish_routes(rt, unread)  # its book has not read the store: nothing goes
    assert admin.get('Secret', ns, first) is not None

    await cycle(rt, operator)
    assert admin.get('Secret', ns, first) is None
    kept = admin.get('Secret', ns, second)
    assert base64.b64decode(kept['data']['webhookUrl']).decode() == 'http://127.0.0.1:9/new'
    admin.close()
    as_api.close()
