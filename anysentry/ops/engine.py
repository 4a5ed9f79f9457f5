"""The operations engine: the books (incidents, alerts, tasks, ...) and the loops that drive them.

Each area module exposes `setup(engine)`, which builds its book(s), subscribes to judged events and
registers its timers. Judged events arrive through `on_events` (pushed by the ingest pipeline in
`anysentry serve`, pulled from the store by the operator in a cluster). The timers run in exactly
one place: `run_loops()` is started by `serve` or by the operator under kopf peering; tests call
`tick(name)` to run one evaluation deterministically."""

from __future__ import annotations

import asyncio
import importlib
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

from anysentry.events.model import AgentEvent
from anysentry.ops.book import Book

log = logging.getLogger("anysentry.ops")

# set up in this order: later areas may use earlier ones (alerts consult maintenance, ...)
AREAS = ("maintenance", "alerts", "notifications", "incidents", "inventory", "objectives", "coverage",
         "remediation", "topology", "evidence")


@dataclass
class Timer:
    name: str
    interval: float
    run: Callable[[], Awaitable[None]]


class OpsEngine:
    def __init__(self, *, sources, collectors, audit, queries=None, store=None):
        self.sources = sources
        self.collectors = collectors
        self.audit = audit
        self.queries = queries
        self.store = store
        self.books: list[Book] = []
        self.event_listeners: list[Callable[[list[AgentEvent]], None]] = []
        self.timers: dict[str, Timer] = {}
        self._tasks: list[asyncio.Task] = []

    def setup(self, areas=AREAS) -> "OpsEngine":
        for area in areas:
            try:
                module = importlib.import_module(f"anysentry.ops.{area}")
            except ModuleNotFoundError as exc:
                if exc.name != f"anysentry.ops.{area}":
                    raise
                continue
            module.setup(self)
        return self

    def register_book(self, book: Book) -> Book:
        self.books.append(book)
        return book

    def register_timer(self, name: str, interval: float, run: Callable[[], Awaitable[None]]) -> None:
        self.timers[name] = Timer(name, interval, run)

    def on_events(self, events: list[AgentEvent]) -> None:
        for listener in self.event_listeners:
            try:
                listener(events)
            except Exception:  # one area's failure must not stop ingest or the others
                log.exception("ops listener failed")

    async def tick(self, name: str) -> None:
        await self.timers[name].run()

    async def run_loops(self) -> None:
        """Run every timer forever (until cancelled)."""
        self._tasks = [asyncio.create_task(self._loop(t), name=f"ops-{t.name}") for t in self.timers.values()]
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for task in self._tasks:
                task.cancel()

    async def _loop(self, timer: Timer) -> None:
        while True:
            await asyncio.sleep(timer.interval)
            try:
                await timer.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ops timer %s failed", timer.name)
