"""The node collector against a real API server on 127.0.0.1: forwarding, heartbeats, outages
buffered on disk and delivered exactly once, a token issued later, items rejected for good, health."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from datetime import datetime, timezone

import aiohttp
import orjson
import pytest

from anysentry.collector.node import NodeCollector
from anysentry.collector.settings import CollectorSettings

COLLECTOR = "anysentry-collector-x7k2p"
NODE = "node-a"


def observer_line(n: int, kind: str = "ToolExec", agent: str = "claude") -> str:
    payloads = {"ToolExec": {"pid": 4000 + n, "ppid": 4000, "uid": 1000, "argv": ["git", "log", f"--max-count={n}"],
                             "cwd": "/workspace/repo"},
                "Egress": {"pid": 4000 + n, "peer": "93.184.216.34", "port": 443},
                "Dns": {"pid": 4000 + n, "query": f"host-{n}.example.com"}}
    return orjson.dumps({"identity": {"agent": agent, "task": str(4000 + n), "session": "pod-uid-1"},
                         "process": {"pid": 4000 + n, "ppid": 4000, "comm": "git"}, "provider": None,
                         "event": {kind: payloads[kind]}}).decode()


def write_lines(path, lines) -> None:
    with open(path, "a") as handle:
        handle.write("".join(line + "\n" for line in lines))


def settings(tmp_path, url: str, **overrides) -> CollectorSettings:
    values = dict(ingest_url=url, procfs=False, ndjson=(str(tmp_path / "observer.ndjson"),),
                  buffer_dir=str(tmp_path / "buffer"), collector_id=COLLECTOR, node_name=NODE, namespace="anysentry",
                  pod_name=COLLECTOR, flush_interval=0.05, heartbeat_interval=0.3, max_backoff=0.2,
                  degraded_after=0.3, request_timeout=5, health_host="127.0.0.1", health_port=0, batch_size=32)
    values.update(overrides)
    return CollectorSettings(**values)


@contextlib.asynccontextmanager
async def running(collector: NodeCollector):
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    ready = asyncio.create_task(collector.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what kept it from starting
    try:
        yield collector
    finally:
        stop.set()
        await task


async def until(check, what: str, timeout: float = 60.0):
    """Poll `check` (async, returns a truthy value when done) until it holds; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting: {what} (last: {result!r})")
        await asyncio.sleep(0.05)


async def events(api, **body) -> list[dict]:
    await api.services.writer.sync()  # read what the api has accepted (false while its store is away)
    return (await api.data("POST", "/events/list", {"limit": 200, "noise": "include", **body}))["items"]


async def health(collector: NodeCollector) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{collector.health_port}/healthz") as resp:
            return resp.status, await resp.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def relay(port: int, target: int) -> asyncio.AbstractServer:
    """A TCP relay on `port` to the api: the api 'comes back' at the address the collector knows."""
    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(reader, writer):
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def test_forwarded_lines_and_heartbeats_reach_the_api(make_api, tmp_path):
    api = await make_api()
    write_lines(tmp_path / "observer.ndjson", [observer_line(1), observer_line(2, "Egress"), observer_line(3, "Dns")])
    now = datetime.now(timezone.utc).isoformat()
    falco = {"time": now, "rule": "Terminal shell in container", "priority": "Notice", "source": "syscall",
             "hostname": NODE, "output": "A shell was spawned in a container",
             "output_fields": {"evt.type": "execve", "proc.cmdline": "bash -i", "proc.name": "bash",
                               "k8s.ns.name": "agents", "k8s.pod.name": "coder-7d9f8b6c5d-x2x7q", "container.id": "abc123def456"}}
    write_lines(tmp_path / "falco.json", [orjson.dumps(falco).decode()])
    tetragon = {"process_exec": {"process": {"exec_id": "ZXhlYy0x", "pid": 77, "uid": 0, "cwd": "/", "binary": "/usr/bin/curl",
                                             "arguments": "-s https://example.com",
                                             "pod": {"namespace": "agents", "name": "coder-0", "workload": "coder",
                                                     "container": {"id": "containerd://abc", "name": "coder"}}}},
                "node_name": NODE, "time": now}
    write_lines(tmp_path / "tetragon.json", [orjson.dumps(tetragon).decode()])
    collector = NodeCollector(settings(tmp_path, api.url, falco=(str(tmp_path / "falco.json"),),
                                       tetragon=(str(tmp_path / "tetragon.json"),)))
    async with running(collector):
        observed = await until(lambda: _with(events(api, agentId="claude"), 3), "the three observer lines")
        by_kind = {item["eventKind"]: item for item in observed}
        assert set(by_kind) == {"ToolExec", "Egress", "Dns"}
        assert {item["agentId"] for item in observed} == {"claude"}
        assert by_kind["ToolExec"]["subject"] == "git log --max-count=1"
        assert by_kind["ToolExec"]["attributes"]["collectorNode"] == NODE
        assert all(item["sourceEventId"].startswith("ose_") for item in observed)
        everything = await until(lambda: _with(events(api), 6), "the Falco and Tetragon events too")
        falco_items = [i for i in everything if "falco.rule" in i["attributes"]]
        assert {i["eventKind"] for i in falco_items} == {"ToolExec", "SecurityAction"}
        assert any(i["subject"] == "-s https://example.com" or "curl" in i["subject"] for i in everything
                   if i["agentId"] == "coder")
        beat = await until(lambda: _collector(api), "a heartbeat in collectors/health")
        assert beat["nodeName"] == NODE and beat["namespace"] == "anysentry" and beat["podName"] == COLLECTOR
        assert beat["mode"] == "observe" and set(beat["enabledFeatures"]) >= {"ndjson", "falco", "tetragon", "disk-buffer"}
        assert beat["state"] in ("healthy", "quiet")
        status, body = await health(collector)
        assert status == 200 and body["status"] == "ok" and body["bufferDepth"] == 0
        assert body["counts"]["forwarded"] >= 5 and body["counts"]["rejected"] == 0


async def _with(listing, count: int):
    items = await listing
    return items if len(items) >= count else None


async def _collector(api) -> dict | None:
    items = (await api.data("POST", "/collectors/health", {}))["items"]
    return next((i for i in items if i["collectorId"] == COLLECTOR), None)


async def test_an_api_outage_is_buffered_on_disk_and_every_line_arrives_exactly_once(make_api, tmp_path):
    port = free_port()
    collector = NodeCollector(settings(tmp_path, f"http://127.0.0.1:{port}"))
    lines = [observer_line(n) for n in range(150)]
    write_lines(tmp_path / "observer.ndjson", lines)
    async with running(collector):
        await until(lambda: _true(collector.buffer.pending_items == 150), "all lines buffered while the api is down")
        assert any((tmp_path / "buffer" / "queue").glob("seg-*.log"))

        body = await until(lambda: _degraded(collector), "health to say degraded")
        assert body["bufferDepth"] == 150 and "unreachable" in body["message"]

        api = await make_api()
        server = await relay(port, api.port)
        try:
            stored = await until(lambda: _with(events(api), 150), "every buffered line in the api")
            await until(lambda: _true(collector.buffer.pending_items == 0), "the buffer to empty")
            stored = await events(api)
        finally:
            server.close()
    assert len(stored) == 150
    assert sorted(item["attributes"]["argv"] for item in stored) == sorted(
        f"git log --max-count={n}" for n in range(150))
    assert len({item["eventId"] for item in stored}) == 150


async def _true(value):
    return value


async def _degraded(collector):
    status, body = await health(collector)
    return body if status == 200 and body["status"] == "degraded" else None


async def test_a_new_collector_replays_its_buffer_and_resumes_its_files_without_duplicates(make_api, tmp_path):
    dead = settings(tmp_path, f"http://127.0.0.1:{free_port()}")
    write_lines(tmp_path / "observer.ndjson", [observer_line(n) for n in range(40)])
    first = NodeCollector(dead)
    async with running(first):
        await until(lambda: _true(first.buffer.pending_items == 40), "the lines buffered")
    write_lines(tmp_path / "observer.ndjson", [observer_line(n) for n in range(40, 60)])  # while no collector runs

    api = await make_api()
    live = settings(tmp_path, api.url)
    async with running(NodeCollector(live)):
        await until(lambda: _with(events(api), 60), "the buffered and the newer lines")
    # a crash that lost the file offsets: everything is read and sent again, and upserted, not doubled
    (tmp_path / "buffer" / "offsets.json").unlink()
    again = NodeCollector(live)
    async with running(again):
        await until(lambda: _true(again.stats.totals["forwarded"] >= 60), "the whole file sent again")
    stored = await events(api)
    assert len(stored) == 60 and len({item["eventId"] for item in stored}) == 60


async def test_a_token_issued_after_the_collector_started_is_picked_up(make_api, tmp_path):
    api = await make_api()
    created = await api.data("POST", "/sources", {"name": "node-collector", "type": "observer", "requireToken": True})
    source_id, token = created["source"]["sourceId"], created["token"]
    token_file = tmp_path / "token"
    collector = NodeCollector(settings(tmp_path, api.url, source_id=source_id, token_file=str(token_file)))
    write_lines(tmp_path / "observer.ndjson", [observer_line(n) for n in range(5)])
    async with running(collector):
        await until(lambda: _true(collector.stats.token_rejected == "source token required"), "the api to ask for a token")
        token_file.write_text("ansrc_not-the-right-one\n")
        await until(lambda: _true(collector.stats.token_rejected == "invalid source token"), "the wrong token refused")
        assert collector.buffer.pending_items == 5 and await events(api) == []  # kept, not dropped
        body = await until(lambda: _degraded(collector), "health to say degraded")
        assert "refusing our credentials (invalid source token)" in body["message"]
        token_file.write_text(token + "\n")
        stored = await until(lambda: _with(events(api), 5), "the lines once the token is there")
        assert {item["sourceId"] for item in stored} == {source_id}
        await until(lambda: _collector(api), "a heartbeat accepted with the token")
    sources = await api.data("POST", "/sources/list", {"sourceId": source_id})
    assert sources["items"][0]["acceptedEvents"] == 5


async def test_an_item_the_api_rejects_is_counted_and_not_sent_again(make_api, tmp_path):
    api = await make_api()
    bad = orjson.dumps({"identity": {"agent": "claude"}, "event": {"Teleport": {"pid": 1}}}).decode()
    write_lines(tmp_path / "observer.ndjson", [observer_line(1), bad, "not json at all", observer_line(2)])
    collector = NodeCollector(settings(tmp_path, api.url))
    async with running(collector):
        await until(lambda: _with(events(api), 2), "the two good lines")
        await until(lambda: _true(collector.buffer.pending_items == 0), "the batch to leave the buffer")
        assert collector.stats.totals["rejected"] == 2
        write_lines(tmp_path / "observer.ndjson", [observer_line(3)])  # the shipper has moved on
        await until(lambda: _with(events(api), 3), "a later line")
        beat = await until(lambda: _rejected_reported(api), "the rejections in a heartbeat")
        assert beat["filterMetrics"]["rejected"] == 2
        status, body = await health(collector)
        assert body["counts"]["rejected"] == 2
    listing = await api.data("POST", "/sources/list", {})
    assert listing["summary"]["rejectedEvents"] == 2  # sent once each, never retried


async def _rejected_reported(api):
    beat = await _collector(api)
    return beat if beat and beat["filterMetrics"].get("rejected") else None


async def test_health_answers_503_when_a_loop_has_stopped(make_api, tmp_path):
    api = await make_api()
    write_lines(tmp_path / "observer.ndjson", [observer_line(1)])
    collector = NodeCollector(settings(tmp_path, api.url))
    async with running(collector):
        status, body = await health(collector)
        assert status == 200 and body["collectorId"] == COLLECTOR and body["nodeName"] == NODE
        collector._tasks["tail"].cancel()
        status, body = await until(lambda: _status(collector, 503), "503 once the tail loop is gone")
        assert body["status"] == "error" and "tail" in body["message"]


async def _status(collector, wanted: int):
    status, body = await health(collector)
    return (status, body) if status == wanted else None


async def test_a_full_api_buffer_is_waited_out_as_its_retry_after_says(make_api, tmp_path, caplog):
    api = await make_api(buffer_max_bytes=40_000)
    store = api.services.store
    store.command(f"DETACH TABLE {store.events_table}")  # the store is away: the api's own buffer fills up
    write_lines(tmp_path / "observer.ndjson", [observer_line(n) for n in range(40)])
    collector = NodeCollector(settings(tmp_path, api.url, batch_size=4))  # a batch fits the api's small buffer
    try:
        async with running(collector):
            await until(lambda: _true("HTTP 503" in collector.stats.last_api_error), "the api to answer 503")
            assert collector.buffer.pending_items > 0
            assert "retrying in 5.0 s" in caplog.text  # the api's Retry-After, not the collector's own backoff
            store.command(f"ATTACH TABLE {store.events_table}")
            await until(lambda: _with(events(api), 40), "every line once the api has room again", timeout=120)
            await until(lambda: _true(collector.buffer.pending_items == 0), "the collector's buffer to empty")
    finally:
        store.command(f"ATTACH TABLE IF NOT EXISTS {store.events_table}")
    stored = await events(api)
    assert len(stored) == 40 and len({item["eventId"] for item in stored}) == 40


@pytest.fixture
async def small_body_api(make_api):
    """The real api app, but refusing request bodies over 4 KiB (HTTP 413), like a strict ingress."""
    return await make_api(max_body_bytes=4096)


async def test_a_request_the_api_refuses_whole_is_split_until_the_bad_item_stands_alone(small_body_api, tmp_path):
    api = small_body_api
    huge = orjson.dumps({"identity": {"agent": "claude", "task": "9"},
                         "event": {"ToolExec": {"pid": 9, "argv": ["echo", "y" * 6000]}}}).decode()
    write_lines(tmp_path / "observer.ndjson", [observer_line(n) for n in range(10)] + [huge]
                + [observer_line(n) for n in range(10, 20)])
    collector = NodeCollector(settings(tmp_path, api.url))
    async with running(collector):
        await until(lambda: _true(collector.buffer.pending_items == 0), "the buffer to empty")
        stored = await until(lambda: _with(events(api), 20), "every line that fits")
        assert collector.stats.totals["rejected"] == 1 and collector.stats.totals["forwarded"] == 20
    assert sorted(item["attributes"]["argv"] for item in stored) == sorted(f"git log --max-count={n}" for n in range(20))
