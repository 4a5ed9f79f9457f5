"""Store ceilings on this machine: insert paths and the `events/list` latest-revision read.

    .venv/bin/python bench/store.py [--rows 200000] [--query-rows 1000000] [--runs 30]

Prints rows/s for (a) `Store.insert_events` (clickhouse-connect, column-oriented Native) and the
other clickhouse-connect paths, (b) a raw `chdb.session.Session` `INSERT … SELECT * FROM
Python(arrow_table)` sharing the path, (c) the full `EventWriter` path (WAL fsync + batch insert);
then p50/p95 of the read patterns the API should use, on `--query-rows` rows. Figures, not tests."""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anysentry.events.model import AgentEvent  # noqa: E402
from anysentry.store.client import _INSERT_TYPES, Store, event_columns  # noqa: E402
from anysentry.store.schema import EVENT_INSERT_COLUMNS  # noqa: E402
from anysentry.store.settings import StoreSettings  # noqa: E402
from anysentry.store.wal import WriteAheadLog  # noqa: E402
from anysentry.store.writer import EventWriter  # noqa: E402

KINDS = ("ToolExec", "Egress", "Dns", "FileAccess", "LlmCall", "ProcessExit")
VERDICTS = ("allow",) * 45 + ("block",) * 3 + ("escalate",) * 2


def make_events(n: int, seed: int, span_ms: int, now_ms: int) -> list[AgentEvent]:
    """Canonical events spread over the last `span_ms` (TTL drops older rows at insert)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        at = now_ms - rnd.randrange(span_ms)
        kind = KINDS[i % len(KINDS)]
        verdict = VERDICTS[rnd.randrange(len(VERDICTS))]
        out.append(
            AgentEvent(
                eventId=f"evt_{seed:04x}{i:012x}",
                at=at,
                eventKind=kind,
                eventCategory="tool",
                source="observer",
                subject=f"bash -c ls /workspace/{i % 97}",
                workspacePath=f"/workspace/w{i % 13}",
                agentId=f"agent-{i % 17}",
                sessionId=f"sess-{i % 211}",
                userId="uid:1000",
                traceId=f"tr-{i % 5000:06d}",
                spanId=f"sp-{i}",
                runId=f"run-{i % 211}",
                collectorId="node-1",
                decisionUpdatedAt=at,
                verdict=verdict,
                severity="info" if verdict == "allow" else "high",
                riskCategory="benign" if verdict == "allow" else "command_danger",
                reason="no rule matched",
                riskScore=0.0 if verdict == "allow" else 70.0,
                tokenCount=i % 300,
                attributes={"pid": 1000 + i % 500, "cwd": "/workspace", "argv": "bash -c ls"},
                process={"pid": 1000 + i % 500, "comm": "bash"},
                judgment={"classification": "confirmed_agent", "profile": "full", "maxTier": "L1"},
                rawPreview='{"identity":{"agent":"a"},"event":{"ToolExec":{"argv":["bash","-c","ls"]}}}',
            )
        )
    return out


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:>12,.0f} rows/s  ({seconds:.2f} s)"


def fresh_store(base: StoreSettings, name: str) -> Store:
    return Store(StoreSettings(data_dir=base.data_dir, chdb_dir=base.chdb_dir, database=name)).open()


def bench_inserts(base: StoreSettings, rows: int) -> None:
    now = time.time_ns() // 1_000_000
    events = make_events(rows, seed=1, span_ms=3 * 3600_000, now_ms=now)
    print(f"\n== insert ceilings, {rows:,} canonical event rows (one batch) ==")

    warm = fresh_store(base, "bench_warm")
    warm.insert_events(events[:1000])  # imports, first-insert costs

    store = fresh_store(base, "bench_connect")
    t = time.perf_counter()
    columns = event_columns(events)
    build = time.perf_counter() - t
    print(f"columns from AgentEvent (Python)            {rate(rows, build)}")
    t = time.perf_counter()
    store.insert_events(events)
    print(f"(a) Store.insert_events (build + Native)     {rate(rows, time.perf_counter() - t)}")

    import pyarrow as pa

    t = time.perf_counter()
    store.client.insert(
        store.events_table, columns, column_names=list(EVENT_INSERT_COLUMNS), column_oriented=True,
        column_type_names=_INSERT_TYPES,
    )
    native = time.perf_counter() - t
    print(f"    client.insert Native, columns prebuilt   {rate(rows, native)}")
    t = time.perf_counter()
    table = pa.table({name: columns[i] for i, name in enumerate(EVENT_INSERT_COLUMNS)})
    arrow_build = time.perf_counter() - t
    t = time.perf_counter()
    store.client.insert_arrow(store.events_table, table)
    print(f"    client.insert_arrow, table prebuilt      {rate(rows, time.perf_counter() - t)}"
          f"  + arrow build {arrow_build:.2f} s")
    t = time.perf_counter()
    body = b"\n".join(e.to_json() for e in events)
    json_build = time.perf_counter() - t
    t = time.perf_counter()
    store.client.raw_insert(store.events_table, None, body, fmt="JSONEachRow")
    print(f"    client.raw_insert JSONEachRow, prebuilt  {rate(rows, time.perf_counter() - t)}"
          f"  + orjson build {json_build:.2f} s")

    fresh_store(base, "bench_session")
    try:
        import chdb.session

        session = chdb.session.Session(base.chdb_path)
        arrow_table = table  # noqa: F841 - read by name by the Python() table function
        t = time.perf_counter()
        session.query("INSERT INTO bench_session.events SELECT * FROM Python(arrow_table)")
        seconds = time.perf_counter() - t
        got = store.query_rows("SELECT count() FROM bench_session.events")[0][0]
        print(f"(b) chdb Session INSERT … Python(arrow)     {rate(rows, seconds)}  + arrow build "
              f"{arrow_build:.2f} s; rows landed: {got:,}; client still works: {store.ping()}")
    except Exception as error:  # noqa: BLE001 - a bench reports, it does not fail
        print(f"(b) chdb Session path failed: {error!r}"[:300])

    for batch in (1000, 5000):
        store = fresh_store(base, f"bench_writer_{batch}")
        wal = WriteAheadLog(Path(base.data_dir) / f"wal-{batch}", max_bytes=1 << 34)
        writer = EventWriter(store, wal, batch_size=5000, flush_interval=0.5)

        async def run() -> float:
            await writer.start()
            t0 = time.perf_counter()
            for i in range(0, rows, batch):
                await writer.submit(events[i : i + batch])
            await writer.sync()
            elapsed = time.perf_counter() - t0
            await writer.stop()
            return elapsed

        seconds = asyncio.run(run())
        landed = store.count_distinct_events()
        print(f"(c) EventWriter submit({batch:>4}) + sync       {rate(rows, seconds)}  landed {landed:,}")
        wal.close()

    wal = WriteAheadLog(Path(base.data_dir) / "wal-only", max_bytes=1 << 34)
    t = time.perf_counter()
    small = events[:20_000]
    for i in range(0, len(small), 100):
        wal.append(small[i : i + 100])
    seconds = time.perf_counter() - t
    print(f"    WAL append+fsync alone (batches of 100)  {rate(len(small), seconds)}"
          f"  = {seconds / (len(small) / 100) * 1000:.2f} ms per batch")
    wal.close()


# Recommended `events/list` (newest N distinct events, latest revision each). Step 1 reads only
# (at, eventId) over the window; step 2 reads whole rows only where the bloom index on eventId
# points. `extra` holds filters on identity fields, which every revision of an event shares.
LIST_SQL = """
SELECT *
FROM {table}
WHERE at >= {{from:UInt64}} AND at < {{to:UInt64}}
  AND eventId IN (
    SELECT eventId FROM {table}
    WHERE at >= {{from:UInt64}} AND at < {{to:UInt64}}{extra}
    ORDER BY at DESC
    LIMIT 1 BY eventId
    LIMIT {{limit:UInt32}})
ORDER BY at DESC, decisionUpdatedAt DESC
LIMIT 1 BY eventId"""

# Filters on decision fields (verdict, tier, severity, riskCategory, decisionStatus) must see the
# latest revision only: pick ids by argMax, then fetch their rows as above.
LIST_DECISION_FILTER_SQL = """
SELECT *
FROM {table}
WHERE at >= {{from:UInt64}} AND at < {{to:UInt64}}
  AND eventId IN (
    SELECT eventId FROM {table}
    WHERE at >= {{from:UInt64}} AND at < {{to:UInt64}}
    GROUP BY eventId
    HAVING argMax(verdict, decisionUpdatedAt) = {{verdict:String}}
    ORDER BY max(at) DESC
    LIMIT {{limit:UInt32}})
ORDER BY at DESC, decisionUpdatedAt DESC
LIMIT 1 BY eventId"""

# Alternatives measured for comparison.
LIST_ONE_PASS_SQL = """
SELECT *
FROM {table}
WHERE at >= {{from:UInt64}} AND at < {{to:UInt64}}{extra}
ORDER BY at DESC, decisionUpdatedAt DESC
LIMIT 1 BY eventId
LIMIT {{limit:UInt32}}"""

LIST_ARGMAX_SQL = """
SELECT eventId, argMax(tuple(*), decisionUpdatedAt) AS latest, max(at) AS last
FROM {table}
WHERE at >= {{from:UInt64}} AND at < {{to:UInt64}}{extra}
GROUP BY eventId
ORDER BY last DESC
LIMIT {{limit:UInt32}}"""

COUNT_FINAL_SQL = """
SELECT verdict, uniqExact(eventId) AS events
FROM {table}
WHERE at >= {{from:UInt64}} AND at < {{to:UInt64}}
  AND decisionStatus IN ('succeeded', 'failed', 'timeout')
GROUP BY verdict"""

COUNT_LATEST_SQL = """
SELECT verdict, count() AS events
FROM (
  SELECT argMax(verdict, decisionUpdatedAt) AS verdict
  FROM {table}
  WHERE at >= {{from:UInt64}} AND at < {{to:UInt64}}
  GROUP BY eventId)
GROUP BY verdict"""

PIN_SQL = """
SELECT * FROM {table}
WHERE eventId = {{id:String}}
ORDER BY decisionUpdatedAt DESC LIMIT 1"""

TRACE_SQL = """
SELECT * FROM {table}
WHERE traceId = {{trace:String}} AND at >= {{from:UInt64}}
ORDER BY at ASC, decisionUpdatedAt DESC
LIMIT 1 BY eventId
LIMIT 500"""


def timed(store: Store, sql: str, params: dict, runs: int) -> tuple[float, float, int]:
    store.query_rows(sql, params)  # warm
    samples, n = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        n = len(store.query_rows(sql, params))
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)], n


def bench_reads(base: StoreSettings, rows: int, runs: int) -> None:
    print(f"\n== reads on {rows:,} rows over the last 24 h (+10% second revisions) ==")
    store = fresh_store(base, "bench_reads")
    now = time.time_ns() // 1_000_000
    day = 24 * 3600_000
    t = time.perf_counter()
    chunk = 100_000
    for seed in range(rows // chunk):
        events = make_events(chunk, seed=seed + 10, span_ms=day, now_ms=now)
        store.insert_events(events)
        revised = events[:: 10]
        for e in revised:
            e.decisionUpdatedAt = e.at + 1500
            e.verdict, e.tier, e.reason = "block", "Llm", "L2: revised"
        store.insert_events(revised)
    total = store.query_rows(f"SELECT count(), uniqExact(eventId) FROM {store.events_table}")[0]
    parts = store.query_rows(
        "SELECT count() FROM system.parts WHERE database = 'bench_reads' AND table = 'events' AND active")[0][0]
    print(f"loaded {total[0]:,} rows / {total[1]:,} events in {time.perf_counter() - t:.1f} s ({parts} parts)")

    window = {"from": now - 3 * 3600_000, "to": now + 1, "limit": 40}
    table = store.events_table
    agent = " AND agentId = 'agent-3'"
    sample_id = store.query_rows(f"SELECT eventId FROM {table} WHERE decisionUpdatedAt > at LIMIT 1")[0][0]
    one_pass = LIST_ONE_PASS_SQL.format(table=table, extra="")
    cases = [
        ("list newest 40: ids first (recommended)", LIST_SQL.format(table=table, extra=""), window),
        ("  + agentId filter", LIST_SQL.format(table=table, extra=agent), window),
        ("  verdict=block on latest revision", LIST_DECISION_FILTER_SQL.format(table=table),
         window | {"verdict": "block"}),
        ("list newest 40: one pass LIMIT 1 BY", one_pass, window),
        ("list newest 40: one pass + agentId", LIST_ONE_PASS_SQL.format(table=table, extra=agent), window),
        ("list newest 40: argMax(tuple(*)) GROUP BY", LIST_ARGMAX_SQL.format(table=table, extra=""), window),
        ("count by verdict 3 h, uniqExact final rows", COUNT_FINAL_SQL.format(table=table), window),
        ("count by verdict 3 h, latest argMax", COUNT_LATEST_SQL.format(table=table), window),
        ("count by verdict 24 h, uniqExact final rows", COUNT_FINAL_SQL.format(table=table),
         {"from": now - day, "to": now + 1}),
        ("count by verdict 24 h, latest argMax", COUNT_LATEST_SQL.format(table=table),
         {"from": now - day, "to": now + 1}),
        ("pin one eventId (all time, bloom index)", PIN_SQL.format(table=table), {"id": sample_id}),
        ("trace timeline (bloom index)", TRACE_SQL.format(table=table),
         {"trace": "tr-000042", "from": now - day}),
        ("Store.latest_events(40 ids, no time bound)", None, None),
    ]
    recommended = store.query_dicts(LIST_SQL.format(table=table, extra=""), window)
    reference = store.query_dicts(one_pass, window)
    assert [r["eventId"] for r in recommended] == [r["eventId"] for r in reference], "list variants disagree"
    assert [r["decisionUpdatedAt"] for r in recommended] == [r["decisionUpdatedAt"] for r in reference]
    ids = [r["eventId"] for r in recommended]
    for label, sql, params in cases:
        if sql is None:
            store.latest_events(ids)
            samples = []
            for _ in range(runs):
                t = time.perf_counter()
                n = len(store.latest_events(ids))
                samples.append((time.perf_counter() - t) * 1000)
            samples.sort()
            p50, p95 = statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]
        else:
            p50, p95, n = timed(store, sql, params, runs)
        print(f"{label:<44} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   rows {n}")
    print("\nrecommended list SQL:" + LIST_SQL.format(table="<db>.events", extra="  -- + identity filters"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--query-rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="anysentry-bench-"))
    base = StoreSettings(data_dir=str(data))
    try:
        t = time.perf_counter()
        fresh_store(base, "bench_boot")
        print(f"open chdb + migrate: {time.perf_counter() - t:.2f} s   (path {base.chdb_path})")
        bench_inserts(base, args.rows)
        if args.query_rows:
            bench_reads(base, args.query_rows, args.runs)
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
