"""`EventWriter`: the asyncio batch writer between the durable local log (WAL) and the store.

`submit()` returns once a batch is fsynced in the WAL — that is what makes `accepted: true` true.
A background task then moves batches to the store in large inserts (by size or every interval) and
acknowledges them in the WAL. Recent batches are kept in memory for that, so the normal path never
reads the log back; after a store failure, an overflow of that memory, or a restart, the writer
replays from the WAL instead, skipping revisions the store already has, so a crash between an
insert and its checkpoint never doubles a row."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from anysentry.events.model import AgentEvent
from anysentry.store.client import Store, revision_at
from anysentry.store.wal import BufferFull, WriteAheadLog, frame

log = logging.getLogger(__name__)

__all__ = ["BufferFull", "EventWriter", "WriterStats"]


@dataclass(slots=True)
class WriterStats:
    buffered_events: int
    buffered_bytes: int
    store_ready: bool
    last_write_latency: float  # seconds, last successful insert
    total_written: int
    last_error: str


class EventWriter:
    def __init__(
        self,
        store: Store,
        wal: WriteAheadLog,
        *,
        batch_size: int | None = None,
        flush_interval: float | None = None,
        retry_initial: float = 0.25,
        retry_max: float = 30.0,
        memory_events: int | None = None,
    ):
        self.store = store
        self.wal = wal
        self.batch_size = max(1, batch_size or store.settings.batch_size)
        self.flush_interval = flush_interval if flush_interval is not None else store.settings.flush_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        # Beyond this many queued events the in-memory copies are dropped and the WAL is replayed.
        self.memory_events = memory_events or max(4 * self.batch_size, 20_000)
        self.store_ready = False
        self.last_write_latency = 0.0
        self.total_written = 0
        self.last_error = ""
        # Batches appended since the WAL was last fully caught up, in WAL order. Valid only while
        # `_complete`: then it holds exactly the unacknowledged WAL batches.
        self._queue: deque[tuple[int, list[AgentEvent]]] = deque()
        self._queued_events = 0
        self._complete = wal.pending_bytes == 0
        self._invalid = False  # set after a failed insert; applied under the lock by `_plan`
        self._mem_lock = threading.Lock()
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._inflight: asyncio.Future | None = None
        self._backoff = 0.0

    # -- producer side --------------------------------------------------------------------------

    async def submit(self, events: list[AgentEvent]) -> None:
        """Durably buffer a batch (fsync once); it reaches the store with the next flush.

        Raises BufferFull when the local buffer is at its limit. The writer keeps references to
        the events until they are stored: do not mutate them afterwards (a new decision revision
        is a new AgentEvent)."""
        if not events:
            return
        await asyncio.to_thread(self._append, list(events))
        if self.wal.pending_events >= self.batch_size:
            self._wake.set()

    def _append(self, events: list[AgentEvent]) -> None:
        framed, count = frame(events)
        with self._mem_lock:
            position = self.wal.append_framed(framed, count)
            if self._complete:
                self._queue.append((position, events))
                self._queued_events += count
                if self._queued_events > self.memory_events:
                    self._drop_memory_locked()

    def _drop_memory_locked(self) -> None:
        self._queue.clear()
        self._queued_events = 0
        self._complete = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, replay what an earlier run left in the WAL, then flush in the background.

        Never raises for an unreachable store: the WAL holds events until it is back."""
        if self._task is not None:
            return
        self._stopping = False
        self._stop_event.clear()
        await self._flush_all()
        self._task = asyncio.create_task(self._run(), name="anysentry-event-writer")

    async def stop(self) -> None:
        """Stop the background task and flush what is buffered (what fails stays in the WAL)."""
        self._stopping = True
        self._stop_event.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            await task  # not cancelled: a flush in progress completes and is acknowledged
        await self._flush_all()

    async def sync(self) -> bool:
        """Make everything submitted so far visible in the store (read-your-writes).

        Cheap when nothing is pending. Returns False without trying while the store is known to
        be down (the background task owns the retries)."""
        target = self.wal.end_position
        if self.wal.checkpoint >= target or self.wal.pending_bytes == 0:
            return True
        if not self.store_ready and self.last_error:
            return False
        async with self._flush_lock:
            if self.wal.checkpoint < target:
                await self._flush_locked()
        return self.wal.checkpoint >= target or self.wal.pending_bytes == 0

    def stats(self) -> WriterStats:
        return WriterStats(
            buffered_events=self.wal.pending_events,
            buffered_bytes=self.wal.pending_bytes,
            store_ready=self.store_ready,
            last_write_latency=self.last_write_latency,
            total_written=self.total_written,
            last_error=self.last_error,
        )

    @property
    def buffered_events(self) -> int:
        return self.wal.pending_events

    # -- flushing -------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            if self._backoff:
                # During an outage, size wake-ups do not shorten the retry delay.
                await self._wait(self._stop_event, self._backoff)
                by_size = False
            else:
                by_size = await self._wait(self._wake, self.flush_interval)
            if self._stopping:
                return
            self._wake.clear()
            try:
                # A size wake-up writes only full batches (few, large parts: merges cost CPU);
                # the interval writes whatever is there.
                await self._flush_all(full_only=by_size)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the flusher die
                log.exception("event writer: unexpected flush error")

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> bool:
        """True when the event fired, False on timeout."""
        try:
            await asyncio.wait_for(event.wait(), timeout=timeout)
            return True
        except TimeoutError:
            return False

    async def _flush_all(self, full_only: bool = False) -> bool:
        async with self._flush_lock:
            return await self._flush_locked(full_only)

    async def _flush_locked(self, full_only: bool = False) -> bool:
        """Drain what is pending in batches (only whole `batch_size` batches when `full_only`);
        False when the store failed (the data stays in the WAL)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._inflight is not None and not self._inflight.done():
                # A step whose caller was cancelled still runs to its end (insert + acknowledge).
                await asyncio.wait([self._inflight])
            # One thread hop per batch: plan, insert and acknowledge run together off the loop.
            self._inflight = loop.run_in_executor(None, self._flush_step, full_only)
            outcome = await asyncio.shield(self._inflight)
            if outcome is not True:
                return outcome is None

    def _flush_step(self, full_only: bool) -> bool | None:
        """Write one batch: True on progress, None when there is nothing (more) to write, False
        when the store failed."""
        plan = self._plan(full_only)
        if plan is None:
            return None if self.store_ready else self._probe()
        started = time.perf_counter()
        try:
            if plan[0] == "memory":
                _, events, position, taken = plan
                written = self.store.insert_events(events)
            else:
                batches = list(self.wal.pending(limit_events=self.batch_size))
                if not batches:
                    raise RuntimeError("the WAL reports pending bytes but yields no batch")
                written = self._insert_new([e for batch in batches for e in batch.events])
                position, taken = batches[-1].position, 0
            self.last_write_latency = time.perf_counter() - started
            self._acknowledge(position, taken)
        except Exception as error:  # noqa: BLE001 - any store error means: keep it in the WAL, retry
            # Also when only the checkpoint failed: the insert landed, so the replay dedupes it.
            self._failed(error)
            return False
        self.total_written += written
        if not self.store_ready:
            log.info("event store is writable again")
        self.store_ready = True
        self.last_error = ""
        self._backoff = 0.0
        return True

    def _probe(self) -> bool | None:
        """With nothing to write, find out whether the store is (back) up, for health and sync."""
        try:
            self.store.open()
            if not self.store.ping():
                raise ConnectionError("store ping failed")
        except Exception as error:  # noqa: BLE001
            self._failed(error)
            return False
        if self.last_error:
            log.info("event store is reachable again")
        self.store_ready, self.last_error, self._backoff = True, "", 0.0
        return None

    def _plan(self, full_only: bool = False) -> tuple | None:
        """What to flush next: None (nothing), ("memory", events, position, batches taken) or ("replay",)."""
        with self._mem_lock:
            if self._invalid:
                self._invalid = False
                self._drop_memory_locked()
            if self.wal.pending_bytes == 0:
                if not self._complete:  # caught up: back to the in-memory path
                    self._queue.clear()
                    self._queued_events = 0
                    self._complete = True
                return None
            if full_only and self.wal.pending_events < self.batch_size:
                return None
            if not self._complete:
                return ("replay",)
            # `_complete` and pending: the queue holds exactly the unacknowledged WAL batches.
            events: list[AgentEvent] = []
            position = taken = 0
            for position, batch in self._queue:
                events.extend(batch)
                taken += 1
                if len(events) >= self.batch_size:
                    break
            return ("memory", events, position, taken)

    def _acknowledge(self, position: int, taken: int) -> None:
        self.wal.acknowledge(position)
        with self._mem_lock:
            if taken and self._complete and not self._invalid:
                for _ in range(taken):
                    self._queued_events -= len(self._queue.popleft()[1])

    def _insert_new(self, events: list[AgentEvent]) -> int:
        """Insert the events whose (eventId, decisionUpdatedAt) the store does not have yet."""
        stored = self.store.existing_revisions(events)
        fresh, seen = [], set(stored)
        for event in events:
            key = (event.eventId, revision_at(event))
            if key not in seen:
                seen.add(key)
                fresh.append(event)
        return self.store.insert_events(fresh)

    def _failed(self, error: Exception) -> None:
        if self.store_ready or not self.last_error:
            log.warning("event store write failed; buffering locally: %s", error)
        self.store_ready = False
        self.last_error = str(error)[:500]
        self._backoff = min(self.retry_max, max(self.retry_initial, self._backoff * 2))
        # The outcome of a failed insert is unknown (it may have partly landed): replay with dedupe.
        self._invalid = True
