"""EventWriter: batching by size and time, read-your-writes, a real outage, idempotent replay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from store_helpers import count_rows, make_event, make_events

from anysentry.store.wal import BufferFull, WriteAheadLog
from anysentry.store.writer import EventWriter


@pytest.fixture
def wal(store_settings):
    log = WriteAheadLog(store_settings.wal_dir, max_bytes=store_settings.buffer_max_bytes)
    yield log
    log.close()


async def _eventually(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def _distinct_and_total(store) -> tuple[int, int]:
    return store.query_rows(f"SELECT uniqExact(eventId, decisionUpdatedAt), count() FROM {store.events_table}")[0]


async def test_flush_by_size(store, wal):
    writer = EventWriter(store, wal, batch_size=100, flush_interval=60)
    await writer.start()
    try:
        await writer.submit(make_events(60))
        await writer.submit(make_events(60))
        await _eventually(lambda: count_rows(store) == 120 and writer.buffered_events == 0, timeout=10)
        assert writer.stats().buffered_events == 0 and writer.total_written == 120
    finally:
        await writer.stop()


async def test_flush_by_time(store, wal):
    writer = EventWriter(store, wal, batch_size=10_000, flush_interval=0.2)
    await writer.start()
    try:
        await writer.submit(make_events(7))
        assert writer.buffered_events == 7
        await _eventually(lambda: count_rows(store) == 7 and writer.buffered_events == 0, timeout=10)
        stats = writer.stats()
        assert stats.store_ready and stats.buffered_events == 0 and stats.last_write_latency > 0
    finally:
        await writer.stop()


async def test_sync_gives_read_your_writes(store, wal):
    writer = EventWriter(store, wal, batch_size=10_000, flush_interval=60)
    await writer.start()
    try:
        assert writer.store_ready  # probed at start, before anything was written
        assert await writer.sync()  # nothing pending: cheap
        events = make_events(25)
        await writer.submit(events)
        assert count_rows(store) == 0
        assert await writer.sync()
        assert count_rows(store) == 25
        assert set(store.latest_events([e.eventId for e in events])) == {e.eventId for e in events}
    finally:
        await writer.stop()


async def test_stop_flushes(store, wal):
    writer = EventWriter(store, wal, batch_size=10_000, flush_interval=60)
    await writer.start()
    await writer.submit(make_events(5))
    await writer.stop()
    assert count_rows(store) == 5 and wal.pending_events == 0


async def test_store_outage_keeps_events_buffered_then_delivers_them_once(store, wal):
    writer = EventWriter(store, wal, batch_size=50, flush_interval=0.1, retry_initial=0.05, retry_max=0.2)
    await writer.start()
    try:
        await writer.submit(make_events(10))
        assert await writer.sync() and count_rows(store) == 10
        await store.acommand(f"DETACH TABLE {store.events_table}")  # a real failure: inserts now error
        try:
            for _ in range(4):
                await writer.submit(make_events(30))  # still accepted: they are in the WAL
            await _eventually(lambda: not writer.store_ready, timeout=10)
            assert await writer.sync() is False
            stats = writer.stats()
            assert stats.buffered_events == 120 and not stats.store_ready and stats.last_error
            await asyncio.sleep(0.5)  # several failed retries must not lose or duplicate anything
            assert writer.buffered_events == 120
        finally:
            await store.acommand(f"ATTACH TABLE {store.events_table}")
        await _eventually(lambda: writer.store_ready and writer.buffered_events == 0, timeout=15)
        assert await writer.sync()
        assert _distinct_and_total(store) == (130, 130)
        await writer.submit(make_events(3))  # back on the in-memory path
        assert await writer.sync() and count_rows(store) == 133
    finally:
        await writer.stop()


async def test_replay_on_start_is_idempotent(store, wal):
    done, in_flight = make_events(40), make_events(20)
    wal.append(done[:20])
    wal.append(done[20:])
    last = wal.append(in_flight)
    # A crash after these inserts but before the checkpoint: the store has them, the WAL too.
    store.insert_events(done + in_flight[:5])
    writer = EventWriter(store, wal, batch_size=30, flush_interval=60)
    await writer.start()
    try:
        assert wal.checkpoint == last and wal.pending_events == 0
        assert _distinct_and_total(store) == (60, 60)
    finally:
        await writer.stop()


async def test_replaying_twice_adds_no_rows(store, store_settings):
    events = make_events(15)
    wal = WriteAheadLog(store_settings.wal_dir, max_bytes=1 << 20)
    wal.append(events)
    writer = EventWriter(store, wal, batch_size=100, flush_interval=60)
    await writer.start()
    await writer.stop()
    wal.close()
    # Forget the checkpoint, as if it never reached the disk: the same batch is replayed again.
    (Path(store_settings.wal_dir) / "checkpoint").unlink()
    wal = WriteAheadLog(store_settings.wal_dir, max_bytes=1 << 20)
    assert wal.pending_events == 15
    writer = EventWriter(store, wal, batch_size=100, flush_interval=60)
    await writer.start()
    await writer.stop()
    wal.close()
    assert _distinct_and_total(store) == (15, 15)


async def test_revisions_of_one_event_are_all_kept(store, wal):
    first = make_event("evt_rev", decisionStatus="pending", verdict="escalate")
    second = make_event("evt_rev", at=first.at, decisionUpdatedAt=first.at + 1, verdict="block")
    writer = EventWriter(store, wal, batch_size=100, flush_interval=60)
    await writer.start()
    try:
        await writer.submit([first])
        await writer.submit([second])
        assert await writer.sync()
        assert count_rows(store) == 2
        assert store.latest_events(["evt_rev"])["evt_rev"].verdict == "block"
    finally:
        await writer.stop()


async def test_buffer_full_is_raised_to_the_submitter(store, store_settings):
    wal = WriteAheadLog(store_settings.wal_dir, max_bytes=4096)
    writer = EventWriter(store, wal, batch_size=10_000, flush_interval=60)
    try:
        with pytest.raises(BufferFull):
            for _ in range(100):
                await writer.submit(make_events(2))
        assert wal.pending_bytes <= 4096
        assert await writer.sync() and wal.pending_bytes == 0
        await writer.submit(make_events(2))  # room again
    finally:
        await writer.stop()
        wal.close()


async def test_memory_overflow_falls_back_to_the_wal(store_settings, store, wal):
    class CountingStore(type(store)):
        lookups = 0

        def existing_revisions(self, events):
            CountingStore.lookups += 1
            return super().existing_revisions(events)

    counting = CountingStore(store_settings).open()
    writer = EventWriter(counting, wal, batch_size=10, flush_interval=60, memory_events=25)
    try:
        for _ in range(5):
            await writer.submit(make_events(10))
        assert not writer._complete  # dropped the in-memory copies
        assert await writer.sync()
        assert _distinct_and_total(store) == (50, 50)
        # never tried before, the batches went in from the log as written: no dedupe lookups
        assert CountingStore.lookups == 0
        await writer.submit(make_events(4))
        assert writer._complete and await writer.sync()
        assert count_rows(store) == 54
    finally:
        await writer.stop()


async def test_a_flush_cancelled_mid_insert_never_doubles_rows(store_settings, store, wal):
    class SlowStore(type(store)):
        def insert_json(self, payloads):
            time.sleep(0.3)  # the insert is in flight when the flush gets cancelled
            return super().insert_json(payloads)

    slow = SlowStore(store_settings).open()
    writer = EventWriter(slow, wal, batch_size=10_000, flush_interval=60)
    await writer.submit(make_events(12))
    flush = asyncio.create_task(writer.sync())
    await asyncio.sleep(0.1)
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    assert await writer.sync()  # waits for the orphaned insert, then replays with dedupe
    assert _distinct_and_total(store) == (12, 12) and wal.pending_events == 0
    await writer.stop()


async def test_unreachable_server_at_boot_buffers_and_reports_not_ready(store_settings):
    from anysentry.store.client import Store
    from anysentry.store.settings import StoreSettings

    settings = StoreSettings(url="http://127.0.0.1:9", data_dir=store_settings.data_dir, database="anysentry")
    down = Store(settings)
    wal = WriteAheadLog(settings.wal_dir, max_bytes=1 << 20)
    writer = EventWriter(down, wal, batch_size=100, flush_interval=60, retry_initial=5, retry_max=5)
    try:
        await writer.start()  # does not raise: the WAL holds the events meanwhile
        await writer.submit(make_events(3))
        assert await writer.sync() is False
        stats = writer.stats()
        assert not stats.store_ready and stats.buffered_events == 3 and stats.last_error
        assert not down.ping() and down.mode == "clickhouse" and down.configured
    finally:
        await writer.stop()
        wal.close()
    reopened = WriteAheadLog(settings.wal_dir, max_bytes=1 << 20)
    assert reopened.pending_events == 3  # still there for the next start
    reopened.close()


async def test_concurrent_submits_share_fsyncs_and_each_waits_for_its_own(store, wal, monkeypatch):
    import os

    flushes = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (flushes.append(fd), real(fd)))
    writer = EventWriter(store, wal, batch_size=10_000, flush_interval=60)
    segment = wal.segment_files()[-1]

    async def producer(n: int) -> None:
        batch = make_events(3, prefix=f"grp{n}")
        await writer.submit(batch)
        on_disk = segment.read_bytes()  # answered only once the batch is written (and flushed)
        assert all(e.eventId.encode() in on_disk for e in batch)

    try:
        await asyncio.gather(*(producer(n) for n in range(40)))
        assert 1 <= len(flushes) < 40  # grouped: fewer flushes than batches
        assert wal.pending_events == 120
        assert await writer.sync()
        assert _distinct_and_total(store) == (120, 120)
    finally:
        await writer.stop()


async def test_a_full_buffer_refuses_only_the_batch_that_does_not_fit(store, store_settings):
    from anysentry.store.wal import frame

    small = len(frame(make_events(1))[0])
    wal = WriteAheadLog(store_settings.wal_dir, max_bytes=small * 3)
    writer = EventWriter(store, wal, batch_size=10_000, flush_interval=60)
    try:
        results = await asyncio.gather(writer.submit(make_events(1)), writer.submit(make_events(40)),
                                       writer.submit(make_events(1)), return_exceptions=True)
        assert results[0] is None and results[2] is None and isinstance(results[1], BufferFull)
        assert wal.pending_events == 2
        assert await writer.sync() and count_rows(store) == 2
    finally:
        await writer.stop()
        wal.close()


async def test_a_flush_writes_what_was_pending_and_does_not_chase_new_batches(store_settings, store, wal):
    inserts = []

    class SlowStore(type(store)):
        def insert_json(self, payloads):
            inserts.append(len(payloads))
            time.sleep(0.2)
            return super().insert_json(payloads)

    slow = SlowStore(store_settings).open()
    writer = EventWriter(slow, wal, batch_size=10_000, flush_interval=60)
    try:
        await writer.submit(make_events(5))
        flush = asyncio.create_task(writer.sync())
        await asyncio.sleep(0.05)
        for _ in range(10):  # arrive while the insert runs: they wait for the next flush
            await writer.submit(make_events(2))
        assert await flush
        assert inserts == [1] and count_rows(store) == 5
        assert await writer.sync()
        assert inserts == [1, 10] and count_rows(store) == 25
    finally:
        await writer.stop()


async def test_quiet_ingest_is_flushed_before_the_interval(store, wal):
    writer = EventWriter(store, wal, batch_size=10_000, flush_interval=8)
    await writer.start()
    try:
        started = time.monotonic()
        await writer.submit(make_events(4))
        await _eventually(lambda: count_rows(store) == 4 and writer.buffered_events == 0, timeout=7)
        assert time.monotonic() - started < 7  # quiet: flushed after ~a quarter of the interval
    finally:
        await writer.stop()


async def test_json_rows_are_stored_exactly_as_submitted(store, wal):
    writer = EventWriter(store, wal, batch_size=10_000, flush_interval=60)
    events = [
        make_event("evt_j1", process=None, attribution=None, judgment=None, attributes={}),
        make_event("evt_j2", process={"pid": 7, "argv": ["sh", "-c", "echo 'x' \"y\" \\\\ ü→😀"]},
                   attribution={"confidence": 0.5, "nested": {"a": [1, None, True]}}, judgment={"l1": "allow"},
                   rawPreview='{"line":"a\\nb"}', riskScore=12.5, tokenCount=3, latencyMs=0.25),
        make_event("evt_j3", decisionUpdatedAt=0),  # stored with the event time as its revision time
    ]
    try:
        await writer.submit(events[:1])
        await writer.submit(events[1:])
        assert await writer.sync()
        back = store.latest_events([e.eventId for e in events])
        expected = {e.eventId: e for e in events}
        expected["evt_j3"].decisionUpdatedAt = expected["evt_j3"].at
        assert back == expected
        row = store.query_dicts(f"SELECT process, attribution FROM {store.events_table} WHERE eventId = 'evt_j1'")[0]
        assert row == {"process": "null", "attribution": "null"}  # as the column-oriented insert stores None
    finally:
        await writer.stop()
