"""The operations loops in the operator: one operations engine per installation (namespace), its
timers run by a kopf daemon on the installation's `AnySentry`, so they run once in the cluster.

kopf peering pauses every handler, daemons included, on all but the highest-priority operator
replica (`anysentry operator` runs with peering unless `--standalone`), which makes the daemon the
singleton DESIGN §2 asks for without a lease of our own.

Each cycle of `run_installation` (every `tick_secs`):
1. refresh: when the installation's store answers, take in what the api replicas wrote (sources'
   counters, collector heartbeats, and every book's records changed by management calls or
   request-driven alerts: `ops.sync`);
2. feed: fold in the judged events the api replicas stored since the last cycle (`ops.feed`): the
   incidents and the alerts that follow from them are built here only, never by the replicas;
3. tick: run every engine timer whose interval elapsed (`ANYSENTRY_OPERATOR_OPS_INTERVAL_SECS`
   shortens them all, for tests and small clusters);
4. flush: write the books the loops changed back to the store (the replicas refresh from there),
   then keep the feed's cursor;
5. publish: every registered publisher writes the statuses of its kind in the namespace (only what
   changed) and posts Events on transitions.
The engine areas are being written by others: each is used through `getattr`, and a failing area
is logged, never fatal."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from anysentry.operator.kube import AsyncKube, Kube
from anysentry.operator.render import RenderOptions

log = logging.getLogger("anysentry.operator.loops")

Publisher = Callable[["Runtime", "Installation"], Awaitable[None]]


def _env_float(name: str, default: float | None, low: float = 0.2) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return max(low, float(raw))
    except ValueError:
        return default


@dataclass
class Settings:
    tick_secs: float = 5.0  # daemon cycle: statuses and timers are looked at this often
    ops_interval_secs: float | None = None  # overrides every engine timer's interval when set
    source_check_secs: float = 60.0  # token rotation due check per Source

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(tick_secs=_env_float("ANYSENTRY_OPERATOR_TICK_SECS", 5.0),
                   ops_interval_secs=_env_float("ANYSENTRY_OPERATOR_OPS_INTERVAL_SECS", None),
                   source_check_secs=_env_float("ANYSENTRY_OPERATOR_SOURCE_CHECK_SECS", 60.0))


def build_engine(store=None):
    """An operations engine with every area that exists in this build (areas land one by one)."""
    from anysentry.ops.audit import AuditLog
    from anysentry.ops.collectors import CollectorRegistry
    from anysentry.ops.engine import AREAS, OpsEngine
    from anysentry.ops.sources import SourceRegistry

    engine = OpsEngine(sources=SourceRegistry(), collectors=CollectorRegistry(), audit=AuditLog(), store=store)
    for area in AREAS:
        try:
            engine.setup((area,))
        except Exception:  # one area that cannot start must not take the operator down
            log.exception("operations area %s unavailable in the operator", area)
    return engine


@dataclass
class Installation:
    """The operations state of one namespace (one AnySentry installation)."""

    namespace: str
    engine: object = field(default=None)
    store: object = None
    store_key: tuple | None = None
    sync: object = None  # ops.sync.BookSync over the store
    feed: object = None  # ops.feed.EventFeed over the store
    # store write time of the newest source and heartbeat row taken in, per table: each refresh
    # reads only what the api replicas wrote since (`refresh_from_store`)
    counters_since: dict[str, int] = field(default_factory=dict)
    loops_owner: str | None = None  # the AnySentry whose daemon runs the loops
    last_run: dict[str, float] = field(default_factory=dict)
    cycles: int = 0
    policy_effect: dict = field(default_factory=dict)  # decisions of 24 h and the last replay (handlers_policy)

    def __post_init__(self) -> None:
        if self.engine is None:
            self.engine = build_engine()

    @property
    def loops_running(self) -> bool:
        return self.loops_owner is not None


class Runtime:
    """What the handlers share: the API client, render options, settings, installations."""

    def __init__(self, kube, *, settings: Settings | None = None, options: RenderOptions | None = None):
        self.kube = kube if isinstance(kube, AsyncKube) else AsyncKube(kube)
        self.settings = settings or Settings.from_env()
        self.options = options or RenderOptions()
        self.installations: dict[str, Installation] = {}
        self.publishers: list[Publisher] = []

    def installation(self, namespace: str) -> Installation:
        inst = self.installations.get(namespace)
        if inst is None:
            inst = self.installations[namespace] = Installation(namespace)
        return inst

    def engine(self, namespace: str):
        return self.installation(namespace).engine


_RUNTIME: Runtime | None = None
_PUBLISHERS: list[Publisher] = []


def register_publisher(publisher: Publisher) -> Publisher:
    """Handler modules register how they publish their kind's statuses (decorator)."""
    if publisher not in _PUBLISHERS:
        _PUBLISHERS.append(publisher)
    if _RUNTIME is not None and publisher not in _RUNTIME.publishers:
        _RUNTIME.publishers.append(publisher)
    return publisher


def runtime() -> Runtime:
    if _RUNTIME is None:
        set_runtime(Runtime(Kube.from_environment()))
    return _RUNTIME  # type: ignore[return-value]


def set_runtime(rt: Runtime | None) -> Runtime | None:
    global _RUNTIME
    _RUNTIME = rt
    if rt is not None:
        for publisher in _PUBLISHERS:
            if publisher not in rt.publishers:
                rt.publishers.append(publisher)
    return rt


# ---------------------------------------------------------------------------------------------
# store


async def configure_store(inst: Installation, settings) -> None:
    """Point the installation at its store (StoreSettings); reopened only when they change."""
    key = (settings.url, settings.database, settings.user) if settings else None
    if key == inst.store_key:
        return
    old, inst.store, inst.store_key = inst.store, None, key
    inst.sync = inst.feed = None
    inst.counters_since = {}
    if old is not None:
        await asyncio.to_thread(old.close)
    if settings is None:
        return
    from anysentry.store.client import Store

    store = Store(settings)
    try:
        await asyncio.wait_for(asyncio.to_thread(store.open), 30)
    except Exception as exc:  # the store may come later: the next configure retries
        log.warning("store of %s unavailable: %s", inst.namespace, exc)
        inst.store_key = None
        return
    from anysentry.ops.feed import EventFeed
    from anysentry.ops.sync import BookSync

    inst.store = store
    inst.engine.store = store
    inst.sync = BookSync(store, inst.engine.books)
    inst.feed = EventFeed(store)


_SOURCE_COUNTERS = ("lastSeenAt", "lastEventAt", "lastHeartbeatAt", "acceptedEvents", "acceptedHeartbeats",
                    "rejectedEvents", "lastResult", "lastError", "lastRejectedAt")


async def refresh_from_store(inst: Installation, *, overlap_ms: int | None = None) -> int:
    """Take in what the api replicas wrote since the last refresh: source counters, heartbeats,
    changed book records. Returns how many source and heartbeat rows were read: only those written
    since the previous look (less `overlap_ms`, rows become readable a little after their stamp)."""
    store = inst.store
    if store is None:
        return 0
    from anysentry.ops.sync import OVERLAP_MS
    from anysentry.store.state import StateTable

    overlap = OVERLAP_MS if overlap_ms is None else overlap_ms
    engine = inst.engine
    read = 0
    try:
        for table in ("sources", "collector_heartbeats"):
            since = inst.counters_since.get(table, 0)
            rows, newest = await StateTable(store, table).achanged_since(max(0, since - overlap))
            records = [record for _, deleted, record in rows if not deleted]
            if table == "sources":
                _take_source_counters(engine, records)
            else:
                engine.collectors.load(records)
            inst.counters_since[table] = max(since, newest)
            read += len(rows)
    except Exception as exc:
        log.warning("refresh of %s from the store failed: %s", inst.namespace, exc)
    if inst.sync is not None:
        await inst.sync.refresh()
    return read


def _take_source_counters(engine, records: list[dict]) -> None:
    """A source the engine does not know yet is taken whole; of a known one only the counters."""
    for record in records:
        current = engine.sources.get(record.get("sourceId", ""))
        if current is None:
            engine.sources.load([record])
            continue
        for key in _SOURCE_COUNTERS:
            if key in record:
                current[key] = record[key]


async def fold_new_events(inst: Installation) -> int:
    """Hand the engine the judged events stored since the last cycle; returns how many."""
    if inst.feed is None:
        return 0
    try:
        events = await inst.feed.pull()
    except Exception as exc:
        log.warning("reading new events of %s failed: %s", inst.namespace, exc)
        return 0
    if events:
        inst.engine.on_events(events)
    return len(events)


async def flush_to_store(inst: Installation) -> bool:
    """Write the changed records; True when everything was written (then the feed's cursor is kept)."""
    store = inst.store
    if store is None:
        return False
    from anysentry.ops.sync import write_book

    written = True
    for book in list(inst.engine.books):
        changed, deleted = book.drain()
        if not changed and not deleted:
            continue
        try:
            await write_book(store, book, changed, deleted)
        except Exception as exc:
            book.restore(changed, deleted)
            written = False
            log.warning("flush of %s to the store failed: %s", book.table_name, exc)
    if written and inst.feed is not None:
        try:
            await inst.feed.commit()
        except Exception as exc:
            log.warning("keeping the event cursor of %s failed: %s", inst.namespace, exc)
    return written


# ---------------------------------------------------------------------------------------------
# the cycle


async def tick(inst: Installation, settings: Settings, *, now: float | None = None, force: bool = False) -> list[str]:
    """Run every engine timer whose interval elapsed; returns the names run."""
    now = time.monotonic() if now is None else now
    ran = []
    for name, timer in list(getattr(inst.engine, "timers", {}).items()):
        interval = settings.ops_interval_secs or timer.interval
        if not force and now - inst.last_run.get(name, -1e18) < interval:
            continue
        inst.last_run[name] = now
        try:
            await timer.run()
            ran.append(name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ops timer %s of %s failed", name, inst.namespace)
    return ran


async def publish(rt: Runtime, inst: Installation) -> None:
    for publisher in list(rt.publishers):
        try:
            await publisher(rt, inst)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("status publisher %s for %s failed", getattr(publisher, "__name__", publisher), inst.namespace)


async def cycle(rt: Runtime, inst: Installation) -> None:
    await refresh_from_store(inst)
    await fold_new_events(inst)
    await tick(inst, rt.settings)
    await flush_to_store(inst)
    await publish(rt, inst)
    inst.cycles += 1


async def run_installation(rt: Runtime, namespace: str, owner: str, stopped) -> None:
    """The daemon body: run the loops of `namespace` until stopped (kopf pauses it on standby peers).
    A second AnySentry in the same namespace idles: one engine, one set of loops per namespace."""
    inst = rt.installation(namespace)
    if inst.loops_owner not in (None, owner):
        log.warning("AnySentry %s/%s: the operations loops already run for %s; this one idles",
                    namespace, owner, inst.loops_owner)
        while not _is_stopped(stopped):
            await _wait(stopped, rt.settings.tick_secs * 4)
            if inst.loops_owner is None:
                break
        else:
            return
    inst.loops_owner = owner
    log.info("operations loops for %s started (AnySentry %s)", namespace, owner)
    try:
        while not _is_stopped(stopped):
            try:
                await cycle(rt, inst)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("operations cycle of %s failed", namespace)
            await _wait(stopped, rt.settings.tick_secs)
    finally:
        if inst.loops_owner == owner:
            inst.loops_owner = None
        log.info("operations loops for %s stopped", namespace)


def _is_stopped(stopped) -> bool:
    if stopped is None:
        return False
    if isinstance(stopped, asyncio.Event):
        return stopped.is_set()
    return bool(stopped)


async def _wait(stopped, seconds: float) -> None:
    if stopped is None:
        await asyncio.sleep(seconds)
    elif isinstance(stopped, asyncio.Event):
        try:
            await asyncio.wait_for(stopped.wait(), seconds)
        except asyncio.TimeoutError:
            pass
    else:  # kopf.DaemonStopped
        await stopped.wait(seconds)
