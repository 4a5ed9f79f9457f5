"""The embedded engine's threads run at a lower priority than the service's own threads (Linux), so
a periodic insert or a merge never takes a core from the event loop."""

import os
import threading
import time

import pytest

from anysentry.store import engine_threads
from anysentry.store.settings import DEFAULT_ENGINE_NICE, StoreSettings

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="thread priorities are read from Linux /proc")


def nice_of(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def engine_tids() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/task")} - {t.native_id for t in threading.enumerate()}


def test_an_open_embedded_store_lowers_the_engine_threads_and_no_python_thread(store):
    store.query_rows("SELECT 1")
    python_before = {t.native_id: nice_of(t.native_id) for t in threading.enumerate()}
    deadline = time.monotonic() + 3 * engine_threads.RECHECK_SECS + 5
    while time.monotonic() < deadline:
        lowered = [tid for tid in engine_tids() if nice_of(tid) >= DEFAULT_ENGINE_NICE]
        if lowered:
            break
        time.sleep(0.2)
    assert lowered, "no engine thread was lowered"
    for thread in threading.enumerate():
        if thread.native_id in python_before:
            assert nice_of(thread.native_id) == python_before[thread.native_id], thread.name


def test_a_thread_is_lowered_only_when_two_passes_saw_it_outside_python(store):
    store.query_rows("SELECT 1")
    nice = DEFAULT_ENGINE_NICE + 3
    first = engine_threads.lower(nice, set())
    assert first and not [tid for tid in first if nice_of(tid) == nice]  # a first sighting changes nothing
    engine_threads.lower(nice, first)
    assert [tid for tid in first & engine_tids() if nice_of(tid) == nice]
    assert all(nice_of(t.native_id) < nice for t in threading.enumerate())


def test_engine_nice_setting():
    assert StoreSettings.from_env({}).engine_nice == DEFAULT_ENGINE_NICE
    assert StoreSettings.from_env({"ANYSENTRY_ENGINE_NICE": "0"}).engine_nice == 0
    assert StoreSettings.from_env({"ANYSENTRY_ENGINE_NICE": "99"}).engine_nice == 19
    assert not engine_threads.keep_low(0)


@pytest.mark.parametrize("nice", [DEFAULT_ENGINE_NICE, 0])
async def test_the_event_writer_inserts_from_a_thread_at_the_engine_priority(store_settings, nice):
    """The embedded engine runs a one-thread insert on its caller: the writer's own thread."""
    import dataclasses

    from store_helpers import count_rows, make_events

    from anysentry.store.client import Store
    from anysentry.store.wal import WriteAheadLog
    from anysentry.store.writer import EventWriter

    store = Store(dataclasses.replace(store_settings, engine_nice=nice)).open()
    wal = WriteAheadLog(store_settings.wal_dir, max_bytes=store_settings.buffer_max_bytes)
    writer = EventWriter(store, wal, flush_interval=60)
    before = {t.ident for t in threading.enumerate()}
    await writer.start()
    try:
        await writer.submit(make_events(5))
        assert await writer.sync() and count_rows(store) == 5
        (thread,) = [t for t in threading.enumerate()
                     if t.name.startswith("anysentry-store-writer") and t.ident not in before]
        assert nice_of(thread.native_id) == nice
        assert nice_of(threading.get_native_id()) == 0  # the loop's thread keeps its priority
    finally:
        await writer.stop()
        wal.close()
        store.command(f"DROP DATABASE IF EXISTS `{store_settings.database}` SYNC")
