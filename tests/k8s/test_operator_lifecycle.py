"""The operator against the real API server: tokens, policy, installations, breaches, restarts."""
from __future__ import annotations

import base64
import json
import uuid

import pytest

from .test_operator_helpers import operator_running, ping_server, wait_for

pytestmark = pytest.mark.k8s


@pytest.fixture(scope='module')
def ns(k8s):
    name = f'ops-{uuid.uuid4().hex[:8]}'
    k8s.kubectl('create', 'namespace', name, check=True)
    yield name
    k8s.kubectl('delete', 'namespace', name, '--wait=false')


@pytest.fixture(scope='module')
def operator(k8s, ns, tmp_path_factory):
    with operator_running(k8s, [ns], tmp_path_factory.mktemp('operator')) as op:
        yield op


def get(k8s, ns, kind, name):
    out = k8s.kubectl('get', '-n', ns, kind, name, '-o', 'json', timeout=20)
    return json.loads(out.stdout) if out.returncode == 0 else None


def apply(k8s, ns, manifest: dict):
    out = k8s.kubectl('apply', '-n', ns, '-f', '-', input=json.dumps(manifest))
    assert out.returncode == 0, out.stderr


def cr(kind, name, spec):
    return {'apiVersion': 'anysentry.io/v1alpha1', 'kind': kind, 'metadata': {'name': name}, 'spec': spec}


def events_of(k8s, ns, name, reason):
    out = k8s.kubectl('get', 'events', '-n', ns, '--field-selector', f'involvedObject.name={name},reason={reason}',
                      '-o', 'json', timeout=20)
    return json.loads(out.stdout)['items'] if out.returncode == 0 else []


def get_pods(k8s, ns):
    return k8s.kubectl('get', 'pods,ds,deploy', '-n', ns, '-o', 'wide', timeout=20).stdout


def condition(obj, type_):
    return next((c for c in ((obj or {}).get('status') or {}).get('conditions') or [] if c['type'] == type_), {})


def secret_token(k8s, ns, name):
    secret = get(k8s, ns, 'secret', name)
    return base64.b64decode(secret['data']['token']).decode() if secret else None


def test_source_token_is_issued_and_rotated_by_annotation(k8s, ns, operator):
    apply(k8s, ns, cr('Source', 'forwarder', {'type': 'forwarder', 'requireToken': True}))
    token = wait_for('the token Secret', lambda: secret_token(k8s, ns, 'forwarder-ingest-token'), log=operator.log)
    source = wait_for('token status', lambda: (s := get(k8s, ns, 'source', 'forwarder')) and
                      (s.get('status') or {}).get('token', {}).get('rotationStatus') == 'fresh' and s, log=operator.log)
    assert source['status']['phase'] == 'Unused'
    assert source['status']['token']['secretRef'] == {'name': 'forwarder-ingest-token', 'key': 'token'}
    secret = get(k8s, ns, 'secret', 'forwarder-ingest-token')
    assert secret['metadata']['ownerReferences'][0]['uid'] == source['metadata']['uid']
    assert token not in json.dumps(source)
    k8s.kubectl('annotate', '-n', ns, 'source', 'forwarder', 'anysentry.io/rotate-token=true', check=True)
    rotated = wait_for('a rotated token', lambda: (t := secret_token(k8s, ns, 'forwarder-ingest-token')) != token and t,
                       log=operator.log)
    assert rotated.startswith('ansrc_')
    wait_for('the annotation removed', lambda: 'anysentry.io/rotate-token' not in
             get(k8s, ns, 'source', 'forwarder')['metadata'].get('annotations', {}), log=operator.log)
    assert wait_for('a TokenRotated event', lambda: events_of(k8s, ns, 'forwarder', 'TokenRotated'), log=operator.log)


def test_invalid_policy_is_reported_and_never_applied(k8s, ns, operator):
    good = cr('Policy', 'baseline', {'rules': [{'name': 'no-rm', 'on': 'ToolExec', 'match': r'\brm\s+-rf\b'}]})
    apply(k8s, ns, good)
    wait_for('the valid Policy', lambda: condition(get(k8s, ns, 'policy', 'baseline'), 'Valid').get('status') == 'True',
             log=operator.log)
    version = get(k8s, ns, 'configmap', 'anysentry-policy')['data']['policyVersion']
    bad = cr('Policy', 'broken', {'rules': [{'name': 'bad-regex', 'on': 'ToolExec', 'match': 'curl(('}]})
    apply(k8s, ns, bad)
    valid = wait_for('Valid=False', lambda: (c := condition(get(k8s, ns, 'policy', 'broken'), 'Valid')).get('status') == 'False'
                     and c, log=operator.log)
    assert valid['reason'] == 'InvalidRule' and 'bad-regex' in valid['message']
    data = get(k8s, ns, 'configmap', 'anysentry-policy')['data']
    assert data['policyVersion'] == version and 'bad-regex' not in data['policy.json']
    assert wait_for('an InvalidPolicy event', lambda: events_of(k8s, ns, 'broken', 'InvalidPolicy'), log=operator.log)


def test_objective_breach_is_written_to_status_and_posted(k8s, ns, operator):
    # an enabled Source that never sent anything counts as down: source_down ≤ 0 is breached
    apply(k8s, ns, cr('Source', 'silent', {'type': 'webhook', 'requireToken': False}))
    wait_for('the source registered', lambda: (get(k8s, ns, 'source', 'silent').get('status') or {}).get('phase'),
             log=operator.log)
    apply(k8s, ns, cr('Objective', 'sources-up', {'metric': 'source_down', 'severity': 'high'}))
    obj = wait_for('a breach', lambda: (o := get(k8s, ns, 'objective', 'sources-up')) and
                   (o.get('status') or {}).get('state') == 'Breach' and o, log=operator.log)
    assert obj['status']['value'] >= 1 and obj['status']['alertId'] and 'down' in obj['status']['evidence']
    (event, *_) = wait_for('an ObjectiveBreached event', lambda: events_of(k8s, ns, 'sources-up', 'ObjectiveBreached'),
                           log=operator.log)
    assert event['type'] == 'Warning'


def test_installation_reaches_ready_rolls_out_and_is_garbage_collected(k8s, ns, operator, fake_kubelet):
    with ping_server() as clickhouse:
        spec = {'storage': {'clickhouse': {'url': clickhouse}}, 'api': {'replicas': 1}}
        apply(k8s, ns, cr('AnySentry', 'sentry', spec))
        for kind, name in (('deployment', 'sentry-api'), ('daemonset', 'sentry-collector'), ('deployment', 'sentry-ui'),
                           ('service', 'sentry-api'), ('configmap', 'sentry-config'), ('role', 'sentry-api'),
                           ('rolebinding', 'sentry-api'), ('serviceaccount', 'sentry-api'), ('source', 'sentry-collector')):
            child = wait_for(f'{kind}/{name}', lambda: get(k8s, ns, kind, name), log=operator.log)
            assert child['metadata']['ownerReferences'][0]['kind'] == 'AnySentry'
        assert get(k8s, ns, 'statefulset', 'sentry-clickhouse') is None  # external store: none bundled
        ready = wait_for('Ready=True', lambda: (o := get(k8s, ns, 'anysentries.anysentry.io', 'sentry')) and
                         condition(o, 'Ready').get('status') == 'True' and o,
                         log=lambda: json.dumps((get(k8s, ns, 'anysentries.anysentry.io', 'sentry') or {}).get('status'), indent=1)
                         + '\n' + get_pods(k8s, ns) + operator.log(30))
        status = ready['status']
        assert status['api']['ready'] == '1/1' and status['collector']['ready'] == '2/2'
        assert condition(ready, 'StorageReady')['reason'] == 'Reachable'
        assert status['endpoints']['api'] == f'http://sentry-api.{ns}.svc:29653/security-center'
        # a spec change rolls out
        before = get(k8s, ns, 'deployment', 'sentry-api')['spec']['template']['metadata']['annotations']['anysentry.io/config-hash']
        k8s.kubectl('patch', '-n', ns, 'anysentries.anysentry.io', 'sentry', '--type=merge', '-p',
                    json.dumps({'spec': {'api': {'replicas': 2}, 'retentionDays': 30}}), check=True)
        dep = wait_for('2 api replicas', lambda: (d := get(k8s, ns, 'deployment', 'sentry-api'))['spec']['replicas'] == 2 and d,
                       log=operator.log)
        assert dep['spec']['template']['metadata']['annotations']['anysentry.io/config-hash'] != before
        wait_for('2/2 api Pods in status', lambda: get(k8s, ns, 'anysentries.anysentry.io', 'sentry')['status']['api']['ready'] == '2/2',
                 log=operator.log)
    k8s.kubectl('delete', '-n', ns, 'anysentries.anysentry.io', 'sentry', '--wait=false', check=True)
    wait_for('the AnySentry gone', lambda: get(k8s, ns, 'anysentries.anysentry.io', 'sentry') is None, log=operator.log)
    for kind, name in (('deployment', 'sentry-api'), ('daemonset', 'sentry-collector'), ('configmap', 'sentry-config')):
        wait_for(f'{kind}/{name} garbage-collected', lambda: get(k8s, ns, kind, name) is None)


def test_operator_survives_an_api_server_restart(k8s, ns, operator):
    k8s.restart_apiserver(down_for=2)
    assert operator.proc.poll() is None, operator.log()
    apply(k8s, ns, cr('Source', 'after-restart', {'type': 'otel'}))
    wait_for('a token after the restart', lambda: secret_token(k8s, ns, 'after-restart-ingest-token'), log=operator.log)
    wait_for('status after the restart', lambda: (get(k8s, ns, 'source', 'after-restart').get('status') or {}).get('phase'),
             log=operator.log)
    # and what changed while it was away converges too
    token = secret_token(k8s, ns, 'after-restart-ingest-token')
    k8s.kubectl('annotate', '-n', ns, 'source', 'after-restart', 'anysentry.io/rotate-token=yes', check=True)
    wait_for('rotation after the restart', lambda: secret_token(k8s, ns, 'after-restart-ingest-token') != token,
             log=operator.log)
