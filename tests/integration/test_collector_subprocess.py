"""`python -m anysentry.cli collect` as its own process against a real API server: the procfs
observer sees a process this test starts on the real /proc, a followed file is forwarded, /healthz
answers, SIGTERM ends it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp
import orjson
import pytest
from test_collector_e2e import free_port, until  # noqa: E402 - sibling test module

pytestmark = pytest.mark.slow


async def test_the_collector_command_observes_forwards_and_stops_cleanly(make_api, tmp_path):
    api = await make_api()
    port = free_port()
    feed = tmp_path / "observer.ndjson"
    feed.write_text(orjson.dumps({"identity": {"agent": "codex", "task": "7", "session": "s-1"},
                                  "event": {"Dns": {"pid": 7, "query": "x7f3.oast.fun"}}}).decode() + "\n")
    command = [sys.executable, "-m", "anysentry.cli", "collect", "--ingest-url", api.url, "--all-processes",
               "--interval", "0.2", "--ndjson", str(feed), "--buffer-dir", str(tmp_path / "buffer"),
               "--collector-id", "subprocess-collector", "--node-name", "node-s", "--heartbeat-interval", "0.5",
               "--health-host", "127.0.0.1", "--health-port", str(port), "--flush-interval", "0.05"]
    log = open(tmp_path / "collector.log", "wb")  # a file, not a pipe nobody drains while the test waits
    collector = await asyncio.create_subprocess_exec(*command, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    sleeper = None
    try:
        async def listed(**body):
            await api.sync()
            return (await api.data("POST", "/events/list", {"limit": 200, "noise": "include", **body}))["items"]

        async def healthy():
            try:
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        return (resp.status, await resp.json())
            except aiohttp.ClientError:
                return None

        status, body = await until(healthy, "the health endpoint")
        assert status == 200 and body["collectorId"] == "subprocess-collector"
        (dns,) = await until(lambda: listed(agentId="codex"), "the forwarded line")
        assert dns["eventKind"] == "Dns" and dns["verdict"] != "allow"  # an OAST domain is judged, not just stored

        sleeper = subprocess.Popen(["sleep", "31.5"])

        async def exec_of_sleeper():
            return [i for i in await listed(eventKind="ToolExec", q="sleep 31.5")  # among the many processes of a busy machine
                    if i["attributes"].get("pid") == sleeper.pid and i["attributes"].get("argv") == "sleep 31.5"]
        (started,) = await until(exec_of_sleeper, "the ToolExec of the sleep this test started")
        assert started["collectorId"] == "subprocess-collector" and started["attributes"]["collectorNode"] == "node-s"
        sleeper.kill()

        async def exit_of_sleeper():
            return [i for i in await listed(eventKind="ProcessExit", agentId=started["agentId"],
                                               sessionId=started["sessionId"]) if i["attributes"].get("pid") == sleeper.pid
                    and i["process"]["startTimeTicks"] == started["process"]["startTimeTicks"]]
        (ended,) = await until(exit_of_sleeper, "the ProcessExit of the sleep")
        assert ended["agentId"] == started["agentId"] and ended["attributes"].get("signal") == 9
        beats = await api.data("POST", "/collectors/health", {})
        assert "subprocess-collector" in [item["collectorId"] for item in beats["items"]]
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        if collector.returncode is None:
            collector.send_signal(signal.SIGTERM)
        await asyncio.wait_for(collector.wait(), 60)
        log.close()
    stderr = (tmp_path / "collector.log").read_text()
    assert collector.returncode == 0, stderr
    assert "Traceback" not in stderr
