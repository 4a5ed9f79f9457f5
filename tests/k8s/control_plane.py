"""A real Kubernetes 1.20 control plane on loopback, for tests: no Docker, no kubelet.

etcd + kube-apiserver (token auth, RBAC) + kube-controller-manager (garbage collector, Deployment,
ReplicaSet, DaemonSet, namespace, service-account controllers ...) + kube-scheduler, each on a free
127.0.0.1 port, with their state, certificates and logs in one working directory. The binaries come
from tools/k8s/build-control-plane.sh, cached in $ANYSENTRY_K8S_CACHE/bin
(default ~/.cache/anysentry-k8s/bin). Pods never run: pair this with fake_kubelet.FakeKubelet.

Run `python tests/k8s/control_plane.py` to get a cluster for poking at by hand.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

CACHE = Path(os.environ.get('ANYSENTRY_K8S_CACHE') or Path.home() / '.cache' / 'anysentry-k8s')
BIN = CACHE / 'bin'
REQUIRED = ('etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl')
BUILD_SCRIPT = 'tools/k8s/build-control-plane.sh'


def missing_binaries(bin_dir: Path = BIN) -> list[str]:
    """Names of the binaries the control plane needs that are not (runnable) in bin_dir."""
    return [b for b in REQUIRED if not os.access(bin_dir / b, os.X_OK)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def scratch_dir(prefix: str = 'anysentry-k8s-') -> Path:
    """A fresh temp dir, in RAM when possible (etcd fsyncs a lot)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir='/dev/shm' if os.path.isdir('/dev/shm') else None))


_prctl = ctypes.CDLL(None).prctl  # looked up here: the forked child should only make the call


def _die_with_parent() -> None:
    # Children get SIGTERM if the test process dies without cleaning up (e.g. killed by a CI timeout).
    _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ControlPlane:
    """Start with start() (or use as a context manager); stop() ends every process it started."""

    def __init__(self, workdir: Path | None = None, bin_dir: Path = BIN, keep_dir: bool = False):
        self.bin = Path(bin_dir)
        missing = missing_binaries(self.bin)
        if missing:
            raise FileNotFoundError(f'missing {missing} in {self.bin}; run {BUILD_SCRIPT}')
        self.dir = Path(workdir) if workdir else scratch_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep_dir = keep_dir
        self.kubeconfig = self.dir / 'kubeconfig'
        self.token = secrets.token_hex(16)
        self.etcd_port, self.peer_port, self.port = free_port(), free_port(), free_port()
        self.server = f'https://127.0.0.1:{self.port}'
        self.ca_file = self.dir / 'certs' / 'apiserver.crt'  # self-signed by the apiserver, kept across restarts
        self._procs: dict[str, subprocess.Popen] = {}
        self._started = False

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> 'ControlPlane':
        self._started = True
        atexit.register(self.stop)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        (self.dir / 'logs').mkdir(exist_ok=True)
        self._make_keys()
        (self.dir / 'tokens.csv').write_text(f'{self.token},admin,admin-uid,"system:masters"\n')
        self._spawn('etcd', self._etcd_args())
        self._wait_http('etcd', f'http://127.0.0.1:{self.etcd_port}/health', b'"health":"true"', timeout)
        self.start_apiserver(timeout)
        self._write_kubeconfig()
        common = [f'--kubeconfig={self.kubeconfig}', '--leader-elect=false', '--port=0', '--secure-port=0']
        self._spawn('kube-controller-manager', [
            str(self.bin / 'kube-controller-manager'), *common,
            f'--service-account-private-key-file={self.dir}/sa.key', f'--root-ca-file={self.ca_file}',
            '--use-service-account-credentials=false', '--controllers=*'])
        self._spawn('kube-scheduler', [str(self.bin / 'kube-scheduler'), *common])
        self._wait_for_default_service_account(timeout)

    def stop(self) -> None:
        """Stop every process (clients before the apiserver, etcd last); remove the dir unless keep_dir."""
        for name in ('kube-scheduler', 'kube-controller-manager', 'kube-apiserver', 'etcd'):
            self._terminate(name)
        if self._started and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        self._started = False

    def start_apiserver(self, timeout: float = 60) -> None:
        self._spawn('kube-apiserver', self._apiserver_args())
        self._wait_http('kube-apiserver', f'{self.server}/readyz', b'ok', timeout, token=self.token)

    def stop_apiserver(self) -> None:
        self._terminate('kube-apiserver')

    def restart_apiserver(self, down_for: float = 0.0, timeout: float = 60) -> None:
        """Stop the apiserver, stay down `down_for` seconds, start it on the same port with the same data."""
        self.stop_apiserver()
        time.sleep(down_for)
        self.start_apiserver(timeout)

    def __enter__(self) -> 'ControlPlane':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- clients -----------------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = False,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the cached kubectl against this cluster; text output captured."""
        return subprocess.run([str(self.bin / 'kubectl'), f'--kubeconfig={self.kubeconfig}', *args],
                              input=input, capture_output=True, text=True, check=check, timeout=timeout)

    def api_client(self):
        """A new kubernetes.client.ApiClient for this cluster."""
        from kubernetes import config
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def log(self, name: str, lines: int = 40) -> str:
        """The last lines of a component's log, for failure messages."""
        path = self.dir / 'logs' / f'{name}.log'
        return ''.join(path.read_text(errors='replace').splitlines(True)[-lines:]) if path.exists() else ''

    # --- internals ---------------------------------------------------------------------------------
    def _etcd_args(self) -> list[str]:
        client, peer = f'http://127.0.0.1:{self.etcd_port}', f'http://127.0.0.1:{self.peer_port}'
        return [str(self.bin / 'etcd'), '--name=default', f'--data-dir={self.dir}/etcd',
                f'--listen-client-urls={client}', f'--advertise-client-urls={client}',
                f'--listen-peer-urls={peer}', f'--initial-advertise-peer-urls={peer}',
                f'--initial-cluster=default={peer}']

    def _apiserver_args(self) -> list[str]:
        d = self.dir
        return [str(self.bin / 'kube-apiserver'), f'--etcd-servers=http://127.0.0.1:{self.etcd_port}',
                '--bind-address=127.0.0.1', '--advertise-address=127.0.0.1', f'--secure-port={self.port}',
                '--insecure-port=0', f'--cert-dir={d}/certs', f'--token-auth-file={d}/tokens.csv',
                '--authorization-mode=RBAC', '--allow-privileged=true',
                '--service-account-issuer=https://kubernetes.default.svc',
                f'--service-account-key-file={d}/sa.pub', f'--service-account-signing-key-file={d}/sa.key',
                '--service-cluster-ip-range=10.0.0.0/24']

    def _make_keys(self) -> None:
        """The service-account signing key pair (apiserver signs tokens, controller-manager mints them)."""
        key, pub = self.dir / 'sa.key', self.dir / 'sa.pub'
        if not key.exists():
            subprocess.run(['openssl', 'genrsa', '-out', str(key), '2048'], check=True, capture_output=True)
            subprocess.run(['openssl', 'rsa', '-in', str(key), '-pubout', '-out', str(pub)],
                           check=True, capture_output=True)

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(f"""\
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {{server: '{self.server}', certificate-authority: '{self.ca_file}'}}
users:
- name: admin
  user: {{token: '{self.token}'}}
contexts:
- name: local
  context: {{cluster: local, user: admin, namespace: default}}
current-context: local
""")

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.dir / 'logs' / f'{name}.log', 'a') as log:  # append: restarts keep earlier logs
            main = threading.current_thread() is threading.main_thread()  # PDEATHSIG follows the thread
            self._procs[name] = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                                 stderr=subprocess.STDOUT,
                                                 preexec_fn=_die_with_parent if main else None)

    def _terminate(self, name: str, grace: float = 3) -> None:
        # The apiserver stops listening at once on SIGTERM but then drains its watch connections for
        # ~15 s while controllers are connected: nothing is gained by waiting for that, so kill it.
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _wait_http(self, name: str, url: str, expect: bytes, timeout: float, token: str | None = None) -> None:
        ctx = ssl._create_unverified_context()  # only a readiness probe; the clients verify the CA
        headers = {'Authorization': f'Bearer {token}'} if token else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._procs[name].poll() is not None:
                raise RuntimeError(f'{name} exited with {self._procs[name].returncode}:\n{self.log(name)}')
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                            context=ctx, timeout=2) as resp:
                    if expect in resp.read():
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f'{name} not ready at {url} after {timeout}s:\n{self.log(name)}')

    def _wait_for_default_service_account(self, timeout: float) -> None:
        """Pods are refused until the controller-manager made `default` and its token: wait for both."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.kubectl('get', 'serviceaccount', 'default', '-n', 'default',
                               '-o', 'jsonpath={.secrets[0].name}', timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return
            time.sleep(0.2)
        raise TimeoutError(f'no default service account after {timeout}s:\n{self.log("kube-controller-manager")}')


if __name__ == '__main__':
    with ControlPlane(keep_dir=True) as cp:
        print(f'export KUBECONFIG={cp.kubeconfig}\nlogs: {cp.dir}/logs  (Ctrl-C stops)')
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
