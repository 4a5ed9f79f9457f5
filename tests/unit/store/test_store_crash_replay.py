"""A process is killed (-9) while appending to the WAL; a new writer replays it into the store.

Every batch whose `append` returned (the API's `accepted: true`) must be in the store exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from store_helpers import count_rows

from anysentry.store.wal import WriteAheadLog
from anysentry.store.writer import EventWriter

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import sys, time
    from anysentry.events.model import AgentEvent
    from anysentry.store.wal import WriteAheadLog

    wal = WriteAheadLog(sys.argv[1], max_bytes=64 << 20, segment_bytes=64 << 10)
    now = time.time_ns() // 1_000_000
    batch = 0
    while True:
        events = [
            AgentEvent(eventId=f"crash_{batch:05d}_{i:02d}", at=now + batch, eventKind="ToolExec",
                       eventCategory="tool", source="observer", subject="x" * 200, workspacePath="/w",
                       agentId="a", sessionId="s", userId="u", traceId="t", spanId=f"{batch}.{i}", runId="r",
                       decisionUpdatedAt=now + batch)
            for i in range(20)
        ]
        wal.append(events)
        if batch == 10:
            wal.acknowledge(wal.end_position)  # as if a writer had stored the first batches
        print(batch, flush=True)  # accepted: the batch is fsynced
        batch += 1
    """
)


async def test_acknowledged_batches_survive_kill_9(store, store_settings, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    child = subprocess.Popen(
        [sys.executable, str(script), store_settings.wal_dir], stdout=subprocess.PIPE, env=env, text=True
    )
    accepted: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(accepted) < 40 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            accepted.append(int(line))
    finally:
        child.send_signal(signal.SIGKILL)  # mid-append, most likely
        child.wait(timeout=30)
        child.stdout.close()
    assert len(accepted) >= 40, "the child did not get going"

    # Batches 0..10 were acknowledged by the child (stored, in its story): they are no longer
    # pending. Every later accepted batch must arrive exactly once.
    wal = WriteAheadLog(store_settings.wal_dir, max_bytes=64 << 20, segment_bytes=64 << 10)
    assert wal.checkpoint > 0 and len(wal.segment_files()) >= 1
    pending_ids = {e.eventId for b in wal.pending() for e in b.events}
    assert not any(i.startswith("crash_00000_") for i in pending_ids)  # acknowledged before the kill
    writer = EventWriter(store, wal, batch_size=500, flush_interval=60)
    await writer.start()
    await writer.stop()
    assert wal.pending_events == 0
    wal.close()

    rows = store.query_rows(
        f"SELECT toUInt32(substring(eventId, 7, 5)) AS batch, count() AS n, uniqExact(eventId) AS u "
        f"FROM {store.events_table} GROUP BY batch ORDER BY batch"
    )
    per_batch = {batch: (n, u) for batch, n, u in rows}
    for batch in accepted:
        if batch > 10:
            assert per_batch.get(batch) == (20, 20), f"accepted batch {batch} missing or doubled"
    assert all(n == u == 20 for n, u in per_batch.values())  # nothing doubled, nothing half-written
    assert count_rows(store) == 20 * len(per_batch)
