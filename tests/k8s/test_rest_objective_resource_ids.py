"""Objectives and maintenance windows created through REST in a cluster are one record: the api
records them under the id of the resource it writes (`obj_<ns>_<name>`, `mw_<ns>_<name>`), the
operator (its own process) reports that id on the resource, and an operator's books synced with the
api's store hold each once, under the REST name."""
from __future__ import annotations

import asyncio
import json

import pytest

from .test_operator_helpers import operator_running, wait_for

pytestmark = pytest.mark.k8s


@pytest.fixture
def ns(k8s_namespace):
    return k8s_namespace


async def test_rest_objectives_and_windows_take_their_resource_ids(k8s, ns, store_settings, tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from anysentry.api.app import ApiSettings, build_app
    from anysentry.api.services import Services
    from anysentry.operator import mirror
    from anysentry.operator.handlers_maintenance import apply_window, window_id
    from anysentry.operator.handlers_objective import apply_objective, objective_id
    from anysentry.operator.kube import Kube
    from anysentry.operator.loops import build_engine
    from anysentry.ops.sync import BookSync

    with operator_running(k8s, [ns], tmp_path) as operator:
        kube = Kube.from_environment(str(k8s.kubeconfig))
        services = Services(store_settings=store_settings, operations='operator')
        mirror.attach(services, namespace=ns, kube=kube)
        client = TestClient(TestServer(build_app(services, ApiSettings(data_dir=tmp_path / 'data'))))
        await client.start_server()

        async def call(method: str, path: str, body=None, expect=200) -> dict:
            resp = await client.request(method, '/security-center' + path, json=body)
            text = await resp.text()
            assert resp.status == expect, text
            return json.loads(text)['data']

        try:
            objective = await call('POST', '/objectives', {'name': 'No Open Incidents', 'metric': 'open_incidents',
                                                           'threshold': 0, 'owner': 'secops'}, 201)
            window = await call('POST', '/maintenance/windows', {'title': 'Node Upgrade', 'targetType': 'collector',
                                                                 'targetId': 'node-1', 'labels': {'change': 'CHG 42'}}, 201)
            oid, wid = objective['objectiveId'], window['windowId']
            assert oid == f'obj_{ns}_no-open-incidents' and wid == f'mw_{ns}_node-upgrade'
            await services.mirror.flush()

            # the resources exist, and the operator's handlers know them by the REST ids
            cr = kube.get('Objective', ns, 'no-open-incidents')
            wcr = kube.get('MaintenanceWindow', ns, 'node-upgrade')
            assert cr is not None and wcr is not None
            assert cr['spec']['metric'] == 'open_incidents' and cr['spec']['owner'] == 'secops'
            assert wcr['spec']['target'] == {'type': 'collector', 'id': 'node-1'}
            for notes in ((cr['metadata'].get('annotations') or {}), (wcr['metadata'].get('annotations') or {})):
                assert "anysentry.io/objectiveid" not in notes and "anysentry.io/windowid" not in notes
            assert objective_id(cr) == oid and window_id(wcr) == wid
            # the operator (its own process) reconciles them under the same ids
            wait_for('the Objective status', lambda: (kube.get('Objective', ns, 'no-open-incidents').get('status') or {})
                     .get('objectiveId') == oid, log=operator.log)
            wait_for('the MaintenanceWindow status', lambda: (kube.get('MaintenanceWindow', ns, 'node-upgrade')
                                                              .get('status') or {}).get('windowId') == wid, log=operator.log)

            # the replica took the resources back in through its watch: still one record each, the
            # REST name, title and labels kept
            for _ in range(100):
                if services.mirror.applied >= 2:
                    break
                await asyncio.sleep(0.1)
            listed = await call('POST', '/objectives/list', {})
            assert [(i['objectiveId'], i['name']) for i in listed['items']] == [(oid, 'No Open Incidents')]
            windows = await call('POST', '/maintenance/list', {})
            assert [(i['windowId'], i['title'], i['labels']) for i in windows['items']] == \
                [(wid, 'Node Upgrade', {'change': 'CHG 42'})]

            # an operator's books, reconciled from the resources and synced with the api's store
            await services.flush_state()
            engine = build_engine(services.store)
            apply_objective(engine, kube.get('Objective', ns, 'no-open-incidents'))
            apply_window(engine, kube.get('MaintenanceWindow', ns, 'node-upgrade'))
            await BookSync(services.store, engine.books).refresh()
            assert [(r['objectiveId'], r['name']) for r in engine.objectives.values()] == [(oid, 'No Open Incidents')]
            assert [(r['windowId'], r['title']) for r in engine.maintenance.values()] == [(wid, 'Node Upgrade')]

            # PUT by that id changes the same resource; a second create of the same name gets its own
            updated = await call('PUT', f'/objectives/{oid}', {'threshold': 2})
            assert updated['objectiveId'] == oid and updated['threshold'] == 2
            await call('PUT', f'/maintenance/windows/{wid}', {'targetId': 'node-2'})
            await services.mirror.flush()
            assert kube.get('Objective', ns, 'no-open-incidents')['spec']['threshold'] == 2
            assert kube.get('MaintenanceWindow', ns, 'node-upgrade')['spec']['target']['id'] == 'node-2'
            again = await call('POST', '/objectives', {'name': 'No Open Incidents', 'metric': 'active_alerts'}, 201)
            assert again['objectiveId'] != oid and again['objectiveId'].startswith(f'obj_{ns}_no-open-incidents-')
            await services.mirror.flush()
            name = again['objectiveId'][len(f'obj_{ns}_'):]
            assert objective_id(kube.get('Objective', ns, name)) == again['objectiveId']
            assert kube.get('Objective', ns, 'no-open-incidents')['spec']['metric'] == 'open_incidents'
            assert services.mirror.errors == 0
        finally:
            await client.close()
            kube.close()
