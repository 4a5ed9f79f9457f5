"""Helpers for the operator's tests against the local control plane (no tests here).

`operator_running(k8s, namespaces)` runs `python -m anysentry.cli operator --standalone -n NS...` as a
subprocess with short cycles, and stops it (by its own pid) afterwards; `ping_server()` is a
stand-in external ClickHouse that only answers `/ping` (the operator's StorageReady check)."""
from __future__ import annotations

import contextlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / 'crds'


def wait_for(what: str, check, timeout: float = 60, interval: float = 0.3, log=None):
    """Poll check() until it returns something truthy; fail after `timeout` (≤ 60) seconds."""
    deadline = time.monotonic() + min(timeout, 60)
    while True:
        try:
            result = check()
        except Exception:  # noqa: BLE001 - a read during an API-server restart
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f'timed out after {timeout}s waiting for {what}' + (f'\n--- operator log ---\n{log()}' if log else ''))
        time.sleep(interval)


def apply_crds(k8s) -> None:
    k8s.kubectl('apply', '-f', str(CRDS), check=True)
    k8s.kubectl('wait', '--for=condition=established', '--timeout=60s', '-f', str(CRDS), check=True, timeout=70)


class OperatorProcess:
    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc = proc
        self.log_path = log_path

    def log(self, lines: int = 60) -> str:
        """The operator's own log lines (tracebacks and the operations areas' noise left out)."""
        text = self.log_path.read_text(errors='replace') if self.log_path.exists() else ''
        kept = [line for line in text.splitlines(True) if line[:2] == '20' and ' anysentry.ops' not in line]
        return ''.join(kept[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def operator_running(k8s, namespaces: list[str], log_dir: Path, **env: str):
    apply_crds(k8s)
    log_path = log_dir / 'operator.log'
    environment = {**os.environ, 'KUBECONFIG': str(k8s.kubeconfig), 'ANYSENTRY_OPERATOR_TICK_SECS': '1',
                   'ANYSENTRY_OPERATOR_OPS_INTERVAL_SECS': '1', 'ANYSENTRY_OPERATOR_SOURCE_CHECK_SECS': '2',
                   'ANYSENTRY_IMAGE': 'example.invalid/anysentry:test', **env}
    args = [sys.executable, '-m', 'anysentry.cli', 'operator', '--standalone', '--kubeconfig', str(k8s.kubeconfig)]
    for ns in namespaces:
        args += ['-n', ns]
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    op = OperatorProcess(proc, log_path)
    try:
        wait_for('the operator to start watching', lambda: proc.poll() is None and 'Activity' in op.log(400)
                 or (proc.poll() is not None and pytest.fail(f'operator exited:\n{op.log()}')), timeout=60, log=op.log)
        yield op
    finally:
        op.stop()


class _Ping(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path.startswith('/ping'):
            body = b'Ok.\n'
            self.send_response(200)
        else:
            body = b'not a ClickHouse'
            self.send_response(404)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def ping_server():
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Ping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()
