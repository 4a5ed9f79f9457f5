"""`accepted: true` means durable (issue 3): it survives kill -9 of the service and a store outage."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
COUNT_SCRIPT = """
import json, sys
import clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
rows = client.query("SELECT eventId, count() FROM anysentry.events GROUP BY eventId").result_rows
print(json.dumps({r[0]: r[1] for r in rows}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "ANYSENTRY_DATA_DIR": str(data_dir), "ANYSENTRY_FLUSH_INTERVAL_SECS": "0.3"}
    env.pop("CLICKHOUSE_URL", None)
    log = open(data_dir / f"server-{port}-{time.time_ns()}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "anysentry.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


async def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url + "/security-center/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("server did not become healthy")


def line(n: int) -> str:
    return orjson.dumps({"identity": {"agent": "writer", "task": str(n), "session": "dur"},
                         "event": {"ToolExec": {"pid": n, "argv": ["echo", str(n)], "cwd": "/w"}}}).decode()


@pytest.mark.slow
async def test_kill_9_mid_stream_loses_no_acknowledged_event(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    acknowledged: set[str] = set()
    try:
        await wait_healthy(url)

        async def producer(worker: int) -> None:
            n = 0
            async with aiohttp.ClientSession() as session:
                while True:
                    batch = [{"line": line(worker * 1_000_000 + n + i), "sourceEventId": f"w{worker}-{n + i}",
                              "collectorId": "dur-node"} for i in range(20)]
                    n += 20
                    try:
                        async with session.post(url + "/security-center/ingest/batch", json={"events": batch}) as resp:
                            body = await resp.json()
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        return  # the server is gone: whatever was not answered was not promised
                    for item in body["data"]["items"]:
                        if item.get("accepted"):
                            acknowledged.add(item["eventId"])

        producers = [asyncio.create_task(producer(w)) for w in range(2)]
        deadline = time.monotonic() + 30
        while len(acknowledged) < 1500 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        server.send_signal(signal.SIGKILL)  # mid-stream: producers are still posting
        server.wait(10)
        await asyncio.gather(*producers)
        assert len(acknowledged) >= 1000

        restarted = start_server(tmp_path, port)
        try:
            await wait_healthy(url)
            async with aiohttp.ClientSession() as session:
                # the replay happens at start; health shows the buffer draining to zero
                for _ in range(100):
                    async with session.get(url + "/security-center/healthz") as resp:
                        storage = (await resp.json())["data"]["storage"]
                    if storage["bufferedEvents"] == 0 and storage["clickhouseReady"]:
                        break
                    await asyncio.sleep(0.2)
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
    counted = subprocess.run([sys.executable, "-c", COUNT_SCRIPT, str(tmp_path / "chdb")], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert counted.returncode == 0, counted.stderr
    rows = json.loads(counted.stdout)
    missing = acknowledged - rows.keys()
    assert not missing, f"{len(missing)} acknowledged events lost"
    doubled = {e: c for e, c in rows.items() if c != 1}
    assert not doubled, f"events stored more than once: {list(doubled.items())[:5]}"


@pytest.mark.slow
async def test_store_outage_buffers_then_delivers_exactly_once(api):
    store = api.services.store
    events = store.events_table
    await api.data("POST", "/ingest", {"line": line(1), "sourceEventId": "before", "collectorId": "out-node"})
    await api.sync()
    store.command(f"DETACH TABLE {events}")  # the store is now unable to take events
    try:
        acked = []
        for n in range(30):
            answer = await api.data("POST", "/ingest/batch", {"events": [
                {"line": line(100 + n * 10 + i), "sourceEventId": f"out-{n}-{i}", "collectorId": "out-node"} for i in range(10)]})
            acked += [i["eventId"] for i in answer["items"] if i["accepted"]]
        assert len(acked) == 300
        for _ in range(50):
            health = await api.data("GET", "/healthz")
            if not health["storage"]["clickhouseReady"]:
                break
            await asyncio.sleep(0.1)
        assert health["status"] == "ok"
        assert health["storage"]["clickhouseReady"] is False and health["storage"]["bufferedEvents"] >= 300
        status, ready = await api.get("/readyz", root=True)
        assert status == 200  # unready only when the buffer is full
    finally:
        store.command(f"ATTACH TABLE {events}")
    for _ in range(200):
        health = await api.data("GET", "/healthz")
        if health["storage"]["clickhouseReady"] and health["storage"]["bufferedEvents"] == 0:
            break
        await asyncio.sleep(0.1)
    assert health["storage"]["bufferedEvents"] == 0
    rows = await store.aquery_rows(f"SELECT eventId, count() FROM {events} GROUP BY eventId")
    counts = dict(rows)
    assert all(counts.get(e) == 1 for e in acked), "every acknowledged event arrives exactly once"


async def test_full_buffer_answers_503_with_retry_after(make_api):
    api = await make_api(buffer_max_bytes=20_000)
    store = api.services.store
    store.command(f"DETACH TABLE {store.events_table}")
    try:
        statuses = []
        for n in range(40):
            status, body = await api.post("/ingest/batch", {"events": [{"line": line(n * 5 + i)} for i in range(5)]})
            statuses.append(status)
            if status == 503:
                assert body["statusCode"] == 503 and "buffer full" in body["message"]
                break
        assert statuses[-1] == 503
        async with api.session.post("/security-center/ingest", json={"line": line(9999)}) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"]
        status, ready = await api.get("/readyz", root=True)
        assert status == 503 and ready["ready"] is False
    finally:
        store.command(f"ATTACH TABLE {store.events_table}")
