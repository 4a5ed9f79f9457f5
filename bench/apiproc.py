"""What the HTTP benchmarks share: `anysentry api` started as a user starts it (a subprocess on a free
loopback port, a fresh data dir, the embedded store), waiting for it to be healthy, stopping it, and
reading its CPU time from /proc."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(data_dir: Path, port: int, **env: str) -> subprocess.Popen:
    """`anysentry api` on 127.0.0.1:`port` over `data_dir` (never a ClickHouse server from the caller's env)."""
    environment = {**os.environ, "ANYSENTRY_DATA_DIR": str(data_dir), **env}
    environment.pop("CLICKHOUSE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "anysentry.cli", "api", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "WARNING"], cwd=ROOT, env=environment)


def stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()


async def wait_healthy(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(600):
        try:
            async with session.get(url + "/security-center/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("server did not start")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its live child processes (the ingest workers), all
    their threads (Linux /proc), zeros elsewhere."""
    user = system = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for member in _process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]) / tick, system + int(fields[12]) / tick
        except (OSError, IndexError, ValueError):
            continue
    return user, system


def _process_tree(pid: int) -> list[int]:
    """The process and its descendants: a child belongs to the thread that started it, so every
    thread's children are read (the ingest workers are spawned from a worker thread)."""
    members = [pid]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return members
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            members.extend(_process_tree(int(child)))
    return members
