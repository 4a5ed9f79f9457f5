"""`EventWriter`: the asyncio batch writer between the durable local log (WAL) and the store.

`submit()` returns once a batch is fsynced in the WAL — that is what makes `accepted: true` true.
Each batch is serialised once (`event_rows`); those bytes are the WAL record and, later, the rows of the
store insert (`Store.insert_json`), so the normal path never builds columns in Python. Concurrent
submits share one write + fsync (group commit: one committer thread takes whatever arrived while
the previous fsync ran), and every submitter still waits for its own batch to be on disk.

A background task moves batches to the store in large inserts — when a full batch is pending,
when ingest goes quiet, or every interval — and acknowledges them in the WAL. Recent batches are
kept in memory (as their bytes) for that, so the normal path never reads the log back; after a
store failure, an overflow of that memory, or a restart, the writer replays from the WAL instead.
What an insert may already have stored (a restart, a failure) is replayed without the revisions the
store has, so a crash between an insert and its checkpoint never doubles a row; what was never tried
(an overflow: the store fell behind) is inserted from the log as written."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from anysentry.events.model import AgentEvent
from anysentry.store import engine_threads, event_rows
from anysentry.store.client import Store, revision_at
from anysentry.store.wal import BufferFull, WriteAheadLog, decode, header

log = logging.getLogger(__name__)

__all__ = ["BufferFull", "EventWriter", "WriterStats"]

# Ingest counts as quiet after this long without a submit; a quiet writer flushes what it holds,
# but not more often than every `flush_interval * _QUIET_FLUSH_SHARE` (few, large parts), capped at
# `_QUIET_GAP_MAX_SECS` so that what went quiet is soon readable whatever the interval.
_QUIET_SECS = 0.05
_QUIET_FLUSH_SHARE = 0.25
_QUIET_GAP_MAX_SECS = 0.25
_COMMITTER_IDLE_SECS = 30.0  # the committer thread ends after this long without a submission


@dataclass(slots=True)
class WriterStats:
    buffered_events: int
    buffered_bytes: int
    store_ready: bool
    last_write_latency: float  # seconds, last successful insert
    total_written: int
    last_error: str


@dataclass(slots=True)
class _Submission:
    payload: bytes | bytearray
    count: int
    future: asyncio.Future
    outcome: object = None  # the WAL position, or the exception that kept the batch out


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
        self.quiet_secs = min(_QUIET_SECS, self.flush_interval)
        self.quiet_gap = min(_QUIET_GAP_MAX_SECS, self.flush_interval * _QUIET_FLUSH_SHARE)
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        # Beyond this many queued events the in-memory copies are dropped and the WAL is replayed.
        self.memory_events = memory_events or max(2 * self.batch_size, 20_000)
        self.store_ready = False
        self.last_write_latency = 0.0
        self.total_written = 0
        self.last_error = ""
        # Batches appended since the WAL was last fully caught up, in WAL order, as
        # (position, payload bytes, event count). Valid only while `_complete`: then it holds
        # exactly the unacknowledged WAL batches.
        self._queue: deque[tuple[int, bytes, int]] = deque()
        self._queued_events = 0
        self._complete = wal.pending_bytes == 0
        self._invalid = False  # set after a failed insert; applied under the lock by `_plan`
        # WAL position up to which an insert may already have stored events (a crash before the
        # checkpoint, a failed insert): replayed with dedupe; anything later is replayed as written
        self._tried_until = wal.end_position
        self._mem_lock = threading.Lock()
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: asyncio.Future | None = None
        self._backoff = 0.0
        # group commit: submissions wait here for the committer thread
        self._commit_cv = threading.Condition(threading.Lock())
        self._commit_queue: list[_Submission] = []
        self._commit_running = False  # a committer thread exists (it ends when idle)
        self._commit_idle = False  # ... and waits for work
        self._unanswered = 0  # submissions not answered yet (loop side)
        self._last_submit = 0.0
        self._last_flush = 0.0  # loop time of the start of the last flush
        self._idle = False  # the flusher sleeps with nothing pending: wake it on the next submit

    # -- producer side --------------------------------------------------------------------------

    async def submit(self, events: list[AgentEvent]) -> None:
        """Durably buffer a batch (fsynced, possibly in one flush with concurrent batches); it
        reaches the store with a later flush.

        Raises BufferFull when the local buffer is at its limit (nothing of the batch is kept).
        The events are serialised at once: mutating them afterwards changes nothing stored."""
        if events:
            await self.submit_serialised(event_rows.payload(events), len(events))

    async def submit_serialised(self, payload: bytes | bytearray, count: int) -> None:
        """`submit` for a batch already serialised: an `event_rows` payload of `count` events (what
        the ingest workers hand back)."""
        if not count:
            return
        loop = asyncio.get_running_loop()
        submission = _Submission(payload, count, loop.create_future())
        self._last_submit = loop.time()
        self._unanswered += 1
        with self._commit_cv:
            self._commit_queue.append(submission)
            if not self._commit_running:
                self._commit_running = True
                threading.Thread(target=self._commit_run, name="anysentry-wal-commit", daemon=True).start()
            elif self._commit_idle:
                self._commit_cv.notify()
        # A caller that goes away (cancelled) does not take the batch out of its group: the
        # committer writes it anyway and ignores the cancelled future.
        outcome = await submission.future
        if isinstance(outcome, BaseException):
            raise outcome
        if self._idle or self.wal.pending_events >= self.batch_size:
            self._wake.set()

    def _commit_run(self) -> None:
        """The committer thread: append whatever was submitted meanwhile as one group (one write,
        one fsync), answer it on the submitters' loop, repeat; ends after a while without work."""
        cv = self._commit_cv
        while True:
            with cv:
                if not self._commit_queue:
                    self._commit_idle = True
                    cv.wait(_COMMITTER_IDLE_SECS)
                    self._commit_idle = False
                    if not self._commit_queue:
                        self._commit_running = False
                        return
                group, self._commit_queue = self._commit_queue, []
            try:
                self._commit_group(group)
            except BaseException as error:  # noqa: BLE001 - each submitter learns why
                for submission in group:
                    if submission.outcome is None:
                        submission.outcome = error
            loop = group[0].future.get_loop()
            try:
                loop.call_soon_threadsafe(self._answer, group)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def _answer(self, group: list[_Submission]) -> None:
        """On the loop: hand each submitter its outcome."""
        self._unanswered -= len(group)
        for submission in group:
            if not submission.future.done():
                submission.future.set_result(submission.outcome)

    def _commit_group(self, group: list[_Submission]) -> None:
        """In the committer thread: one WAL write + fsync for the group, then the memory queue."""
        records = []
        for submission in group:
            payload = submission.payload
            head = header(payload, submission.count)
            records.append(((head, payload), len(head) + len(payload), submission.count))
        with self._mem_lock:
            outcomes = self.wal.append_many(records)
            for submission, outcome in zip(group, outcomes):
                submission.outcome = outcome
                if self._complete and not isinstance(outcome, BaseException):
                    self._queue.append((outcome, submission.payload, submission.count))
                    self._queued_events += submission.count
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
        while self._unanswered:  # batches being appended are answered (and queued) first
            await asyncio.sleep(0.001)
        await self._flush_all()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

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

    def _next_flush(self, now: float) -> tuple[float, bool]:
        """(seconds until the next flush is due, whether it writes only full batches)."""
        pending = self.wal.pending_events
        if pending >= self.batch_size:
            return 0.0, True
        due = self._last_flush + self.flush_interval  # the interval: health probe or a trickle
        if pending:
            # Quiet ingest: write what is there without waiting for the interval.
            due = min(due, max(self._last_submit + self.quiet_secs, self._last_flush + self.quiet_gap))
        return due - now, False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_flush = loop.time()
        while not self._stopping:
            if self._backoff:
                # During an outage, size wake-ups do not shorten the retry delay.
                await self._wait(self._stop_event, self._backoff)
                full_only = False
            else:
                delay, full_only = self._next_flush(loop.time())
                if delay > 0:
                    self._idle = self.wal.pending_events == 0
                    await self._wait(self._wake, delay)
                    self._idle = False
                    self._wake.clear()
                    continue  # look again: something was submitted, or the time has come
            if self._stopping:
                return
            self._wake.clear()
            self._last_flush = loop.time()
            try:
                # Full batches only while a backlog builds (few, large parts: merges cost CPU);
                # quiet ingest or the interval write whatever is there.
                await self._flush_all(full_only=full_only)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the flusher die
                log.exception("event writer: unexpected flush error")
                await self._wait(self._stop_event, self.flush_interval)

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
        """Drain what is pending when called, in batches (while `full_only`: as long as whole
        `batch_size` batches are pending); False when the store failed (the data stays in the
        WAL). What arrives meanwhile waits for the next flush instead of trickling into the store
        one small insert after another (every insert costs a part: ~10 ms of engine CPU)."""
        loop = asyncio.get_running_loop()
        target = self.wal.end_position
        while True:
            if self._inflight is not None and not self._inflight.done():
                # A step whose caller was cancelled still runs to its end (insert + acknowledge).
                await asyncio.wait([self._inflight])
            # One thread hop per batch: plan, insert and acknowledge run together off the loop.
            self._inflight = loop.run_in_executor(self._flusher(), self._flush_step, full_only)
            outcome = await asyncio.shield(self._inflight)
            if outcome is not True:
                return outcome is None
            if not full_only and self.wal.checkpoint >= target:
                return True

    def _flusher(self) -> ThreadPoolExecutor:
        """The writer's own thread, at the embedded engine's priority: a one-thread insert runs on
        it, and must not take a core from the event loop (see `engine_threads`)."""
        if self._executor is None:
            settings = self.store.settings
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="anysentry-store-writer",
                                                initializer=engine_threads.lower_this_thread,
                                                initargs=(settings.engine_nice if settings.embedded else 0,))
        return self._executor

    def _flush_step(self, full_only: bool) -> bool | None:
        """Write one batch: True on progress, None when there is nothing (more) to write, False
        when the store failed."""
        plan = self._plan(full_only)
        if plan is None:
            return None if self.store_ready else self._probe()
        started = time.perf_counter()
        try:
            if plan[0] == "memory":
                _, payloads, written, position, taken = plan
                self.store.insert_json(payloads)
            else:
                written, position = self._replay_step()
                taken = 0
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
        """What to flush next: None (nothing), ("memory", payloads, events, position, batches
        taken) or ("replay",)."""
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
            payloads: list[bytes] = []
            position = taken = events = 0
            for position, payload, count in self._queue:
                payloads.append(payload)
                events += count
                taken += 1
                if events >= self.batch_size:
                    break
            return ("memory", payloads, events, position, taken)

    def _acknowledge(self, position: int, taken: int) -> None:
        self.wal.acknowledge(position)
        with self._mem_lock:
            if taken and self._complete and not self._invalid:
                for _ in range(taken):
                    self._queued_events -= self._queue.popleft()[2]
            if not self._complete and not self._invalid and self.wal.pending_bytes == 0:
                # Caught up (appends happen under this lock): back to the in-memory path.
                self._queue.clear()
                self._queued_events = 0
                self._complete = True

    def _replay_step(self) -> tuple[int, int]:
        """One insert from the WAL; returns (events written, position to acknowledge).

        Batches that an earlier insert may have stored, wholly or in part — pending at start, or
        covered by a failed insert — are decoded and inserted without the revisions the store
        already has. Later batches were never tried (the memory copies were dropped because the
        store fell behind): they go in as written, so falling behind costs a read of the log, not
        a decode, a lookup and a new serialisation of every event."""
        records: list[tuple[int, bytes]] = []
        events = position = 0
        verify: bool | None = None
        for end, count, payload in self.wal.payloads():
            tried = end <= self._tried_until
            if verify is None:
                verify = tried
            elif tried != verify:
                break
            position = end
            if payload is not None:  # a damaged record (logged) is passed over
                records.append((end, payload))
                events += count
            if events >= self.batch_size:
                break
        if verify is None:
            raise RuntimeError("the WAL reports pending bytes but yields no batch")
        if verify:
            return self._insert_new([event for end, payload in records for event in decode(payload, end)]), position
        if records:
            self.store.insert_json([payload for _, payload in records])
        return events, position

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
        self._tried_until = max(self._tried_until, self.wal.end_position)
