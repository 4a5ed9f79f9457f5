"""`anysentry ui` and the UI inside `anysentry serve`, run as a user runs them (subprocesses on
loopback ports): they serve the dashboard, say where, and stop cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def page_when_up(url: str, log: Path, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return await resp.text()
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.3)


def launch(args: list[str], log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("CLICKHOUSE_URL", "ANYSENTRY_ADMIN_TOKEN")}
    return subprocess.Popen([sys.executable, "-m", "anysentry.cli", *args], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


async def test_ui_command_serves_the_dashboard(tmp_path):
    port, api_port = free_port(), free_port()
    log = tmp_path / "ui.log"
    process = launch(["ui", "--port", str(port), "--api-url", f"http://127.0.0.1:{api_port}/security-center"], log)
    try:
        html = await page_when_up(f"http://127.0.0.1:{port}/", log)
        assert "<title>AnySentry</title>" in html
    finally:
        assert stop(process) == 0, log.read_text()
    # the base path given with the URL is not doubled
    assert f"web UI on http://127.0.0.1:{port}/ (API http://127.0.0.1:{api_port})" in log.read_text()


async def test_serve_starts_the_ui_against_its_own_api(tmp_path):
    port, ui_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    process = launch(["serve", "--port", str(port), "--ui-port", str(ui_port), "--data-dir", str(tmp_path / "data")], log)
    try:
        html = await page_when_up(f"http://127.0.0.1:{ui_port}/", log)
        assert "<title>AnySentry</title>" in html
        await page_when_up(f"http://127.0.0.1:{port}/security-center/healthz", log)
    finally:
        assert stop(process) == 0, log.read_text()
    assert f"web UI on http://127.0.0.1:{ui_port}/ (API http://127.0.0.1:{port})" in log.read_text()
