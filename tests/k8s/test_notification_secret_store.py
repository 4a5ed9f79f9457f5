"""A NotificationRoute receiver's webhook URL and HMAC key come from a Secret and never reach the
store: the operator's notification book flushes the channel without them (the raw rows of every
table are searched for the canaries), the operator delivers with them to a real receiver on
127.0.0.1 (signed with the key), an api replica that loads the channel from the same store never
sends to it but hands its deliveries to the operator through the store, and an operator restarted on
that store reads the Secret again before it delivers."""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from secret_canaries import raw_rows, signed_by

from .test_operator_helpers import apply_crds

pytestmark = pytest.mark.k8s


@pytest.fixture
def ns(k8s_namespace):
    return k8s_namespace


async def test_secret_values_stay_out_of_the_store_and_only_the_operator_delivers(
        k8s, ns, store, store_settings, receiver, tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from anysentry.api.app import ApiSettings, build_app
    from anysentry.api.services import Services
    from anysentry.operator import mirror
    from anysentry.operator.handlers_notification import deliver_handed_over, publish_route
    from anysentry.operator.kube import AsyncKube, Kube
    from anysentry.operator.loops import Installation, build_engine, flush_to_store
    from anysentry.ops.sync import BookSync

    token = f'CANARY-{uuid.uuid4().hex}'
    key = f'hmac-canary-{uuid.uuid4().hex}'
    url = f'http://127.0.0.1:{receiver.port}/hooks/{token}'
    cid = f'chn_{ns}_pager_oncall'
    apply_crds(k8s)
    k8s.kubectl('create', 'secret', 'generic', 'pager-hook', '-n', ns, f'--from-literal=url={url}',
                f'--from-literal=hmac={key}', check=True)
    k8s.kubectl('apply', '-n', ns, '-f', '-', check=True, input=json.dumps(
        {'apiVersion': 'anysentry.io/v1alpha1', 'kind': 'NotificationRoute', 'metadata': {'name': 'pager'},
         'spec': {'match': {'minSeverity': 'high'},
                  'receivers': [{'name': 'oncall', 'webhookUrlSecretRef': {'name': 'pager-hook', 'key': 'url'},
                                 'hmacKeySecretRef': {'name': 'pager-hook', 'key': 'hmac'}}]}}))
    kube = Kube.from_environment(str(k8s.kubeconfig))
    akube = AsyncKube(kube)
    route = kube.get('NotificationRoute', ns, 'pager')

    def raise_alert(engine):
        return engine.alerts.upsert(rule_id='incident.open', kind='incident', dedupe_key=f'canary:{ns}', severity='critical',
                                    title='Agent read a credential', description='canary alert')

    # the operator reads the Secret and delivers, signed with the key
    operator = Installation(ns, engine=build_engine(store), store=store)
    status = await publish_route(akube, operator.engine, route)
    assert [c.reason for c in status.conditions if c.type == 'Ready'] == ['Resolved']
    alert = raise_alert(operator.engine)
    await operator.engine.notifications.drain()
    (path, headers, body), = receiver.received
    assert path == f'/hooks/{token}' and signed_by(key, headers, body)
    assert json.loads(body)['action'] == 'opened' and json.loads(body)['alert']['alertId'] == alert['alertId']

    # its books go to the store without the URL or the key
    assert await flush_to_store(operator)
    dump = raw_rows(store, store_settings.database)
    assert cid in dump
    assert token not in dump and key not in dump
    (stored,) = [json.loads(body) for id_, body in store.query_rows(
        f'SELECT id, body FROM {store.table("notification_channels")} FINAL') if id_ == cid]
    assert stored['source'] == 'secret' and stored['signingKeyConfigured'] is True
    assert stored['endpointPreview'] == f'http://127.0.0.1:{receiver.port}/...'
    assert stored['secretRef'] == {'webhookUrl': {'name': 'pager-hook', 'key': 'url'},
                                   'signingKey': {'name': 'pager-hook', 'key': 'hmac'}}

    # an api replica on the same store holds the channel without its values and never sends to it: a
    # resolve it serves is queued in the store for the operator
    services = Services(store_settings=store_settings, operations='operator')
    mirror.attach(services, namespace=ns, kube=kube)
    client = TestClient(TestServer(build_app(services, ApiSettings(data_dir=tmp_path / 'data'))))
    await client.start_server()
    try:
        replica = services.ops.notifications
        assert replica.channel(cid)['source'] == 'secret' and 'webhookUrl' not in replica.channel(cid)
        resp = await client.put(f'/security-center/alerts/{alert["alertId"]}', json={'status': 'resolved'})
        assert resp.status == 200, await resp.text()
        await replica.drain()
        assert len(receiver.received) == 1
        (queued,) = [d for d in replica.deliveries.values() if d['channelId'] == cid and d['action'] == 'resolved']
        assert queued['status'] == 'queued'
        resp = await client.get('/security-center/notifications/config', params={'channelId': cid})
        text = await resp.text()
        (item,) = json.loads(text)['data']['channels']
        assert item['endpointPreview'] == f'http://127.0.0.1:{receiver.port}/...' and item['signingKeyConfigured'] is True
        assert token not in text and key not in text
        listed = json.loads(text)['data']['deliveries']
        assert [(d['action'], d['status']) for d in listed] == [('opened', 'ok')]  # queued rows are not listed
        await services.flush_state()

        # the operator's cycle takes the queued delivery over and sends it; the replica sees the outcome
        await BookSync(store, operator.engine.books).refresh()
        await deliver_handed_over(None, operator)
        await operator.engine.notifications.drain()
        assert len(receiver.received) == 2
        path, headers, body = receiver.received[1]
        assert path == f'/hooks/{token}' and signed_by(key, headers, body) and json.loads(body)['action'] == 'resolved'
        assert await flush_to_store(operator)
        await services.book_sync.refresh()
        assert replica.deliveries.get(queued['deliveryId'])['status'] == 'ok'
    finally:
        await client.close()

    # an operator restarted on the store reads the Secret again before it delivers
    restarted = Installation(ns, engine=build_engine(store), store=store)
    await BookSync(store, restarted.engine.books).refresh()
    notifier = restarted.engine.notifications
    assert 'webhookUrl' not in notifier.channel(cid)
    assert restarted.engine.alerts.get(alert['alertId'])['status'] == 'resolved'
    assert raise_alert(restarted.engine)['status'] == 'open'  # reopened: a delivery waits for the Secret
    await asyncio.sleep(0)
    await publish_route(akube, restarted.engine, kube.get('NotificationRoute', ns, 'pager'))
    await notifier.drain()
    await deliver_handed_over(None, restarted)  # nothing left queued: the resolve is not sent again
    await notifier.drain()
    assert len(receiver.received) == 3
    path, headers, body = receiver.received[2]
    assert path == f'/hooks/{token}' and signed_by(key, headers, body) and json.loads(body)['action'] == 'reopened'
    assert sorted((d['action'], d['status']) for d in notifier.deliveries.values() if d['channelId'] == cid) == \
        [('opened', 'ok'), ('reopened', 'ok'), ('resolved', 'ok')]  # nothing went out without its URL
    assert await flush_to_store(restarted)
    dump = raw_rows(store, store_settings.database)
    assert token not in dump and key not in dump
    kube.close()
