"""Pod identity across namespaces on the real API server (SPEC §7.6, `spec.identity.namespaces`).

The operator renders the api's RBAC and ANYSENTRY_IDENTITY_NAMESPACES from the AnySentry; the pod
watcher then runs exactly as `anysentry api` runs it — settings from the rendered ConfigMap, acting
as the api's ServiceAccount — so these show that what the operator grants is what the watcher needs:
Pods in a listed namespace are resolved, Pods elsewhere are not (and cannot be read), `*` resolves
every namespace through a ClusterRole, a narrowed list takes access away, and deleting the
AnySentry removes what garbage collection cannot reach. The chart's operator may grant all of it."""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from .test_notification_route_mirror import acting_as
from .test_operator_helpers import ROOT, operator_running, ping_server, wait_for
from .test_pod_identity_watch import create_namespace, create_pod

pytestmark = pytest.mark.k8s
AGENT = {'anysentry.io/workload-kind': 'agent'}


@pytest.fixture
def spaces(k8s):
    base = f'ident-{uuid.uuid4().hex[:6]}'
    names = {'home': base, 'agents': f'{base}-agents', 'other': f'{base}-other'}
    for name in names.values():
        create_namespace(k8s, name)
    yield names
    for name in names.values():
        k8s.kubectl('delete', 'namespace', name, '--wait=false')


@pytest.fixture
def admin(cluster_admin):
    return cluster_admin


def installation(clickhouse: str, namespaces: list[str] | None) -> dict:
    spec = {'storage': {'clickhouse': {'url': clickhouse}}, 'api': {'replicas': 1},
            'collector': {'enabled': False}, 'ui': {'enabled': False}}
    if namespaces is not None:
        spec['identity'] = {'namespaces': namespaces}
    return {'apiVersion': 'anysentry.io/v1alpha1', 'kind': 'AnySentry', 'metadata': {'name': 'sentry'}, 'spec': spec}


def apply(k8s, ns: str, manifest: dict) -> None:
    out = k8s.kubectl('apply', '-n', ns, '-f', '-', input=json.dumps(manifest))
    assert out.returncode == 0, out.stderr


def watched_namespaces(admin, ns: str) -> str | None:
    config = admin.get('ConfigMap', ns, 'sentry-config')
    return ((config or {}).get('data') or {}).get('ANYSENTRY_IDENTITY_NAMESPACES')


def may_list_pods(as_api, namespace: str | None) -> bool:
    from anysentry.operator.kube import KubeError

    try:
        as_api.list('Pod', namespace)
        return True
    except KubeError as exc:
        assert exc.status == 403, exc
        return False


def api_watcher(admin, as_api, home: str):
    """The watcher `pods.attach` starts in the api, from the operator's ConfigMap, as the api's account."""
    from anysentry.events.workloads import EnrichSettings, WorkloadIndex
    from anysentry.operator.pods import PodWatcher

    settings = EnrichSettings.from_env(admin.get('ConfigMap', home, 'sentry-config')['data'])
    watcher = PodWatcher(WorkloadIndex.from_settings(settings), as_api, settings.namespaces,
                         watch_timeout=5, max_backoff=1.0).start()
    assert watcher.ready.wait(30), 'the api could not list the Pods it watches'
    return watcher


def test_the_operator_grants_the_api_exactly_the_namespaces_it_watches(k8s, spaces, admin, tmp_path):
    home, agents, other = spaces['home'], spaces['agents'], spaces['other']
    pods = {ns: create_pod(admin, ns, 'coder-0', AGENT)['metadata']['uid'] for ns in (home, agents, other)}
    role = f'anysentry:{home}:sentry-api:pods'
    as_api = acting_as(k8s, f'system:serviceaccount:{home}:sentry-api')
    try:
        with ping_server() as clickhouse, operator_running(k8s, [home], tmp_path) as operator:
            # one listed namespace: a Role there; its own namespace not listed, so not readable either
            apply(k8s, home, installation(clickhouse, [agents]))
            wait_for('the watched namespaces', lambda: watched_namespaces(admin, home) == agents, log=operator.log)
            wait_for('the Role in the agents namespace', lambda: admin.get('RoleBinding', agents, role), log=operator.log)
            wait_for('read access in the agents namespace', lambda: may_list_pods(as_api, agents), log=operator.log)
            assert not may_list_pods(as_api, other) and not may_list_pods(as_api, home) and not may_list_pods(as_api, None)
            assert admin.get('ClusterRole', None, role) is None
            watcher = api_watcher(admin, as_api, home)
            try:
                assert watcher.scopes == (agents,)
                assert watcher.index.match(pods[agents]).workspace_path == f'{agents}/coder-0'
                assert watcher.index.match(pods[other]) is None and watcher.index.match(pods[home]) is None
                later = create_pod(admin, agents, 'coder-1', AGENT)['metadata']['uid']  # followed by the watch
                wait_for('a pod created later', lambda: watcher.index.match(later), timeout=30)
            finally:
                watcher.stop()

            # every namespace: one ClusterRole; the Role in the agents namespace goes
            k8s.kubectl('patch', '-n', home, 'anysentries.anysentry.io', 'sentry', '--type=merge', '-p',
                        json.dumps({'spec': {'identity': {'namespaces': ['*']}}}), check=True)
            wait_for('every namespace watched', lambda: watched_namespaces(admin, home) == '*', log=operator.log)
            binding = wait_for('the ClusterRoleBinding', lambda: admin.get('ClusterRoleBinding', None, role), log=operator.log)
            assert 'ownerReferences' not in binding['metadata']
            assert binding['metadata']['labels']['anysentry.io/installation-namespace'] == home
            wait_for('the Role in the agents namespace removed', lambda: admin.get('Role', agents, role) is None
                     and admin.get('RoleBinding', agents, role) is None, log=operator.log)
            wait_for('cluster-wide read access', lambda: may_list_pods(as_api, None), log=operator.log)
            watcher = api_watcher(admin, as_api, home)
            try:
                assert watcher.scopes == (None,)  # one cluster-wide list and watch
                for ns in (home, agents, other):
                    assert watcher.index.match(pods[ns]).workspace_path == f'{ns}/coder-0'
                later = create_pod(admin, other, 'coder-2', AGENT)['metadata']['uid']
                wait_for('a pod created later anywhere', lambda: watcher.index.match(later), timeout=30)
            finally:
                watcher.stop()

            # deleting the installation removes what no owner reference can reach
            k8s.kubectl('delete', '-n', home, 'anysentries.anysentry.io', 'sentry', '--wait=false', check=True)
            wait_for('the ClusterRole and its binding removed', lambda: admin.get('ClusterRole', None, role) is None
                     and admin.get('ClusterRoleBinding', None, role) is None, log=operator.log)
            wait_for('the AnySentry gone', lambda: admin.get('AnySentry', home, 'sentry') is None, log=operator.log)
            wait_for('no read access left', lambda: not may_list_pods(as_api, None) and not may_list_pods(as_api, agents))
    finally:
        as_api.close()
        for kind in ('ClusterRoleBinding', 'ClusterRole'):  # whatever a failed run left behind
            admin.delete(kind, None, role)


def test_by_default_the_api_reads_pods_in_its_own_namespace_only(k8s, spaces, admin, tmp_path):
    home, agents = spaces['home'], spaces['agents']
    pods = {ns: create_pod(admin, ns, 'coder-0', AGENT)['metadata']['uid'] for ns in (home, agents)}
    as_api = acting_as(k8s, f'system:serviceaccount:{home}:sentry-api')
    try:
        with ping_server() as clickhouse, operator_running(k8s, [home], tmp_path) as operator:
            apply(k8s, home, installation(clickhouse, None))
            wait_for('the watched namespaces', lambda: watched_namespaces(admin, home) == home, log=operator.log)
            wait_for('read access at home', lambda: may_list_pods(as_api, home), log=operator.log)
            assert not may_list_pods(as_api, agents) and not may_list_pods(as_api, None)
            watcher = api_watcher(admin, as_api, home)
            try:
                assert watcher.index.match(pods[home]).workspace_path == f'{home}/coder-0'
                assert watcher.index.match(pods[agents]) is None
            finally:
                watcher.stop()
            labelled = f'anysentry.io/installation-namespace={home}'
            assert admin.list('Role', None, label_selector=labelled) == []
            assert admin.list('ClusterRole', None, label_selector=labelled) == []
    finally:
        as_api.close()


@pytest.mark.parametrize('cluster_wide', [True, False])
def test_the_chart_operator_may_grant_pod_reads_elsewhere(k8s, spaces, admin, cluster_wide):
    """Kubernetes lets an account grant only what it holds: the chart's operator makes the Roles in
    other namespaces, and the ClusterRole for `*` unless rbac.clusterWidePodIdentity is false."""
    import yaml

    from anysentry.operator import render_rbac
    from anysentry.operator.kube import KubeError
    from anysentry.resources.manifests import validate_object

    from .control_plane import BIN

    home, agents = spaces['home'], spaces['agents']
    release = f'ident-{uuid.uuid4().hex[:6]}'
    out = subprocess.run([str(BIN / 'helm'), 'template', release, str(ROOT / 'charts' / 'anysentry'), '--namespace', home,
                          '--set', f'rbac.clusterWidePodIdentity={str(cluster_wide).lower()}'],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cluster_role = next(d for d in yaml.safe_load_all(out.stdout) if d and d['kind'] == 'ClusterRole')
    name = cluster_role['metadata']['name']

    def rbac(namespaces):
        resource, errors = validate_object({'apiVersion': 'anysentry.io/v1alpha1', 'kind': 'AnySentry',
                                            'metadata': {'name': 'sentry', 'namespace': home},
                                            'spec': {'identity': {'namespaces': namespaces}}})
        assert not errors, errors
        return render_rbac.identity_rbac(resource)

    k8s.kubectl('apply', '-f', '-', check=True, input=json.dumps(cluster_role))
    k8s.kubectl('create', 'clusterrolebinding', name, f'--clusterrole={name}', f'--serviceaccount={home}:operator', check=True)
    as_operator = acting_as(k8s, f'system:serviceaccount:{home}:operator')
    try:
        for manifest in rbac([agents]):
            assert as_operator.apply(manifest)['metadata']['namespace'] == agents
        everywhere = rbac(['*'])
        if cluster_wide:
            for manifest in everywhere:  # the ClusterRole, then the binding to it
                as_operator.apply(manifest)
            for manifest in reversed(everywhere):
                assert as_operator.delete(manifest['kind'], None, manifest['metadata']['name'])
        else:
            with pytest.raises(KubeError) as refused:
                as_operator.apply(everywhere[0])
            assert refused.value.status == 403
    finally:
        as_operator.close()
        k8s.kubectl('delete', 'clusterrolebinding', name)
        k8s.kubectl('delete', 'clusterrole', name)
        for manifest in rbac(['*']):
            admin.delete(manifest['kind'], None, manifest['metadata']['name'])


def test_the_api_server_takes_the_example_and_refuses_a_bad_namespace(k8s, spaces):
    from .test_operator_helpers import apply_crds

    apply_crds(k8s)
    home = spaces['home']
    out = k8s.kubectl('apply', '-n', home, '-f', str(ROOT / 'examples' / 'cluster' / 'anysentry-agent-namespaces.yaml'))
    assert out.returncode == 0 and 'created' in out.stdout, out.stderr
    stored = json.loads(k8s.kubectl('get', '-n', home, 'anysentries.anysentry.io', 'anysentry', '-o', 'json', check=True).stdout)
    assert stored['spec']['identity']['namespaces'] == ['coding-agents', 'research-agents']
    assert stored['spec']['ui']['publicBasePath'] == '/anysentry/'
    bad = {'apiVersion': 'anysentry.io/v1alpha1', 'kind': 'AnySentry', 'metadata': {'name': 'bad'},
           'spec': {'identity': {'namespaces': ['Team_A']}}}
    out = k8s.kubectl('apply', '-n', home, '-f', '-', input=json.dumps(bad))
    assert out.returncode != 0 and 'spec.identity.namespaces' in out.stderr, out.stderr
