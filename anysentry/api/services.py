"""The long-lived parts one API process shares: store, durable writer, registries, judge, metrics.

`start()` opens the store, replays the durable buffer and loads state; `stop()` flushes. Loops that
must run in exactly one place (operations) are attached by `serve` or the operator, not here.

`operations` says who folds judged events into the books: `local` (this process: `serve`, a single
api) or `operator` (a cluster: the operator reads them from the store, `ops.feed`; this replica
takes in the books' changes every `state_refresh_secs`, `ops.sync`, and serves and edits them)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from anysentry.api.auth import ManagementAuth
from anysentry.api.metrics import ApiMetrics
from anysentry.api.pipeline import IngestPipeline
from anysentry.judge.engine import Judge
from anysentry.judge.policy import sanitize_policy
from anysentry.ops.audit import AuditLog
from anysentry.ops.collectors import CollectorRegistry
from anysentry.ops.engine import OpsEngine
from anysentry.ops.sources import SourceRegistry
from anysentry.ops.sync import write_book
from anysentry.store.client import Store
from anysentry.store.queries import EventQueries
from anysentry.store.settings import StoreSettings
from anysentry.store.state import ConfigStore, StateTable
from anysentry.store.wal import WriteAheadLog
from anysentry.store.writer import EventWriter

log = logging.getLogger("anysentry.services")


class PolicyState:
    """The active policy and its compiled judge; replacing it affects the very next event."""

    def __init__(self, policy: dict | None = None, locked: bool = False):
        self.locked = locked  # policy comes from a configuration folder or the cluster, not from PUT
        self.set(policy or {})

    def set(self, policy: dict) -> None:
        sanitized = sanitize_policy(policy)
        judge = Judge(sanitized)  # compiles: raises PolicyError before anything changes
        self.policy, self.judge = sanitized, judge

    @property
    def version(self) -> str:
        return self.judge.version

    def current(self) -> Judge:
        return self.judge


@dataclass
class Services:
    store_settings: StoreSettings = field(default_factory=StoreSettings.from_env)
    auth: ManagementAuth = field(default_factory=ManagementAuth.from_env)
    state_flush_secs: float | None = None  # default: store_settings.state_flush_interval
    operations: str = "local"
    state_refresh_secs: float = 5.0

    def __post_init__(self) -> None:
        if self.state_flush_secs is None:
            self.state_flush_secs = self.store_settings.state_flush_interval
        self.store = Store(self.store_settings)
        self.wal = WriteAheadLog(self.store_settings.wal_dir, self.store_settings.buffer_max_bytes)
        self.writer = EventWriter(self.store, self.wal)
        self.metrics = ApiMetrics(self.writer.stats)
        self.sources = SourceRegistry()
        self.collectors = CollectorRegistry()
        self.policy = PolicyState()
        self.config = ConfigStore(self.store)
        self.source_table = StateTable(self.store, "sources")
        self.heartbeat_table = StateTable(self.store, "collector_heartbeats")
        self.audit_table = StateTable(self.store, "audit")
        self.audit = AuditLog()
        self.pipeline = IngestPipeline(sources=self.sources, collectors=self.collectors, writer=self.writer,
                                       metrics=self.metrics, judge=self.policy.current)
        self.queries = EventQueries(self.store)
        self.ops = OpsEngine(sources=self.sources, collectors=self.collectors, audit=self.audit,
                             queries=self.queries, store=self.store).setup()
        if self.operations not in ("local", "operator"):
            raise ValueError(f"operations must be 'local' or 'operator', not {self.operations!r}")
        if self.operations == "local":
            self.pipeline.listeners.append(self.ops.on_events)
        from anysentry.ops.sync import BookSync

        self.book_sync = BookSync(self.store, self.ops.books)
        inventory = getattr(self.ops, "inventory", None)
        if inventory is not None:
            self.pipeline.review_lookup = inventory.review_for_event
            self.pipeline.reviews_present = inventory.has_reviews
        self.started_at = time.time()
        self._tasks: list[asyncio.Task] = []
        self.check_in_listeners: list = []  # (source record | None, body, status) → alerts
        self.startup_hooks: list = []  # async callables run after state is loaded (ops, demo feed, config folder)
        self.shutdown_hooks: list = []
        from anysentry.api.tiers import attach  # tiers subclass PolicyState from here
        self.tiers = attach(self)  # L2/L3: judge with usable tiers, pending rows, model connections
        from anysentry.ops import alerts  # check-ins raise alerts; pending deliveries get a grace period
        alerts.attach(self)

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.store.open)
            self.writer.store_ready = True
            await self._load_state()
        except Exception as exc:  # the store may be down at boot: ingest still buffers durably
            log.warning("store unavailable at start: %s", exc)
        await self.writer.start()
        self._tasks.append(asyncio.create_task(self._flush_state_loop(), name="state-flush"))
        if self.operations == "operator":
            self._tasks.append(asyncio.create_task(self._refresh_state_loop(), name="state-refresh"))
        for hook in self.startup_hooks:
            await hook(self)

    async def _load_state(self) -> None:
        self.sources.load(await self.source_table.aall())
        self.collectors.load(await self.heartbeat_table.aall())
        self.audit.load(await self.audit_table.aall())
        await self.book_sync.refresh()  # every book; the refresh loop (operator mode) goes on from here
        from anysentry.ops.local_channel_secrets import hold_local_values

        hold_local_values(self)  # standalone: REST channels' URLs and keys from their local files, before any delivery
        if not self.policy.locked:
            stored = await self.config.aget("policy")
            if isinstance(stored, dict):
                try:
                    self.policy.set(stored)
                except Exception as exc:  # a stored policy that no longer compiles must not stop boot
                    log.error("stored policy rejected, keeping defaults: %s", exc)

    async def flush_state(self) -> None:
        sources = self.sources.dirty_records()
        heartbeats = self.collectors.dirty_records()
        audits = self.audit.drain()
        drained = [(book, *book.drain()) for book in self.ops.books]
        try:
            for book, changed, deleted in drained:
                await write_book(self.store, book, changed, deleted)
            if audits:
                await self.audit_table.aput_many({r["auditId"]: r for r in audits})
            if sources:
                await self.source_table.aput_many({r["sourceId"]: r for r in sources})
            if heartbeats:
                await self.heartbeat_table.aput_many({r["collectorId"]: r for r in heartbeats})
        except Exception as exc:
            log.warning("state flush failed, will retry: %s", exc)
            self.sources.mark_dirty(sources)
            self.collectors.mark_dirty(heartbeats)
            self.audit.pending[:0] = audits
            for book, changed, deleted in drained:
                book.restore(changed, deleted)

    async def _flush_state_loop(self) -> None:
        while True:
            await asyncio.sleep(self.state_flush_secs)
            await self.flush_state()

    async def _refresh_state_loop(self) -> None:
        while True:
            await asyncio.sleep(self.state_refresh_secs)
            await self.book_sync.refresh()

    async def stop(self) -> None:
        for hook in self.shutdown_hooks:
            try:
                await hook(self)
            except Exception as exc:
                log.warning("shutdown hook failed: %s", exc)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.flush_state()
        await self.writer.stop()
        self.wal.close()
        if self.workers is not None:
            self.workers.close()

    def use_workers(self, workers) -> None:
        """Large ingest batches are judged by these worker processes (started by the first one)."""
        self.pipeline.workers = workers

    @property
    def workers(self):
        """The IngestWorkers of the pipeline, None without."""
        return self.pipeline.workers

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task
