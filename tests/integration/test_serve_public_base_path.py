"""`anysentry serve` with PUBLIC_BASE_PATH (SPEC §3.1), run as a user runs it (a subprocess on loopback
ports): the prefix applies to both the API (which still answers without it) and the built-in UI, whose
URL is printed with it; a value that is not a path stops start-up with a message, not a stack trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from test_webui_commands import ROOT, free_port, page_when_up, stop  # noqa: E402 - sibling test module

pytestmark = pytest.mark.slow


def launch_serve(args: list[str], log: Path, public_base_path: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("CLICKHOUSE_URL", "ANYSENTRY_ADMIN_TOKEN")}
    env["PUBLIC_BASE_PATH"] = public_base_path
    return subprocess.Popen([sys.executable, "-m", "anysentry.cli", "serve", *args], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


async def status_of(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, allow_redirects=False) as resp:
            return resp.status, await resp.text()


async def test_serve_applies_the_prefix_to_the_api_and_the_ui(tmp_path):
    port, ui_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    process = launch_serve(["--port", str(port), "--ui-port", str(ui_port), "--data-dir", str(tmp_path / "data")],
                           log, "/anysentry/")
    try:
        await page_when_up(f"http://127.0.0.1:{port}/anysentry/security-center/healthz", log)
        # in-process and in-cluster clients keep calling the API without the prefix
        await page_when_up(f"http://127.0.0.1:{port}/security-center/healthz", log)
        html = await page_when_up(f"http://127.0.0.1:{ui_port}/anysentry/", log)
        assert "<title>AnySentry</title>" in html
        status, body = await status_of(f"http://127.0.0.1:{ui_port}/")
        assert status == 404 and "<title>AnySentry</title>" not in body
    finally:
        assert stop(process) == 0, log.read_text()
    text = log.read_text()
    assert f"web UI on http://127.0.0.1:{ui_port}/anysentry/ (API http://127.0.0.1:{port})" in text, text
    assert f"the API also answers at http://127.0.0.1:{port}/anysentry/security-center" in text, text


async def test_serve_refuses_a_prefix_that_is_not_a_path(tmp_path):
    log = tmp_path / "serve.log"
    process = launch_serve(["--port", str(free_port()), "--no-ui", "--data-dir", str(tmp_path / "data")], log,
                           "/../admin")
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    text = log.read_text()
    assert code == 2, text
    assert "anysentry serve: PUBLIC_BASE_PATH must be a path such as /anysentry/" in text and "Traceback" not in text


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("PUBLIC_BASE_PATH", "anysentry", "PUBLIC_BASE_PATH must be a path such as /anysentry/"),
    ("PORT", "http", "PORT must be a whole number, got 'http'"),
    ("ANYSENTRY_MAX_BODY_BYTES", "-1", "ANYSENTRY_MAX_BODY_BYTES must not be negative"),
    ("ANYSENTRY_INGEST_WORKERS", "two", "ANYSENTRY_INGEST_WORKERS must be a whole number, got 'two'"),
])
def test_api_refuses_a_bad_setting_with_a_message(tmp_path, variable, value, message):
    env = {k: v for k, v in os.environ.items() if k not in ("CLICKHOUSE_URL", "PUBLIC_BASE_PATH", "PORT")}
    env.update({variable: value, "ANYSENTRY_DATA_DIR": str(tmp_path / "data")})
    done = subprocess.run([sys.executable, "-m", "anysentry.cli", "api", "--host", "127.0.0.1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert f"anysentry api: {message}" in done.stderr and "Traceback" not in done.stderr
