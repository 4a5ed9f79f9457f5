"""The judged events the operations engine folds in, read from the store in the order it took them.

In a cluster the api replicas only ingest, judge and store; the operator's engine alone builds
incidents from what they stored, so several replicas never keep rival books. It reads the rows the
books need (final non-allow decisions: first decisions and the L2/L3 revisions that replace them)
after a cursor on `storedAt`, the store's own write time, which the api replicas do not set and a
producer cannot skew. A row can become readable shortly after its stamp, so each pull looks back
`overlap_ms` and skips what it already handed out; the cursor is kept in the config table, so a
restarted operator resumes where it stopped (folding an event twice is harmless: the incident book
recognises a re-posted event)."""

from __future__ import annotations

import asyncio
import logging

from anysentry.events.model import AgentEvent
from anysentry.store.state import ConfigStore

log = logging.getLogger("anysentry.ops.feed")

CURSOR_KEY = "ops.eventCursor"
WANTED = "verdict != 'allow' AND decisionStatus = 'succeeded'"


class EventFeed:
    def __init__(self, store, *, overlap_ms: int = 30_000, page: int = 10_000):
        self.store = store
        self.overlap_ms = overlap_ms
        self.page = page
        self.cursor: int | None = None
        self._committed: int | None = None  # the cursor the config table holds (as far as this process knows)
        self._seen: dict[tuple[str, int], int] = {}  # (eventId, decisionUpdatedAt) → storedAt
        self._config = ConfigStore(store)

    async def pull(self) -> list[AgentEvent]:
        """The wanted rows stored since the last pull (at most `page` new ones), oldest first."""
        return await asyncio.to_thread(self._pull)

    async def commit(self) -> None:
        """Keep the cursor, once what was pulled has been folded in and flushed; only when it moved."""
        cursor = self.cursor
        if cursor is not None and cursor != self._committed:
            await self._config.aput(CURSOR_KEY, cursor)
            self._committed = cursor

    def _pull(self) -> list[AgentEvent]:
        if self.cursor is None:
            self.cursor = self._start()
        table = self.store.events_table
        rows = self.store.query_dicts(
            f"SELECT *, storedAt AS _storedAt FROM {table} WHERE storedAt > {{low:UInt64}} AND storedAt <= {{cursor:UInt64}} "
            f"AND {WANTED} ORDER BY storedAt LIMIT {self.page * 5}",
            {"low": max(0, self.cursor - self.overlap_ms), "cursor": self.cursor},
        )  # the look-back: rows that became readable after the previous pull passed their stamp
        rows += self.store.query_dicts(
            f"SELECT *, storedAt AS _storedAt FROM {table} WHERE storedAt > {{cursor:UInt64}} AND {WANTED} "
            f"ORDER BY storedAt LIMIT {self.page}",
            {"cursor": self.cursor},
        )
        events = []
        for row in rows:
            stored_at = row.pop("_storedAt")
            key = (row["eventId"], row["decisionUpdatedAt"])
            if key in self._seen:
                continue
            self._seen[key] = stored_at
            self.cursor = max(self.cursor, stored_at)
            events.append(AgentEvent.from_dict(row))
        floor = self.cursor - self.overlap_ms
        self._seen = {key: at for key, at in self._seen.items() if at > floor}
        return events

    def _start(self) -> int:
        """The kept cursor. The first time: the beginning when no incident exists yet (a new
        installation folds in whatever its api replicas stored before the operator looked), else
        the newest row (those events are in the books already, folded in by an earlier release)."""
        kept = self._config.get(CURSOR_KEY)
        if isinstance(kept, int) and not isinstance(kept, bool):
            self._committed = kept
            return kept
        if not self.store.query_rows(f"SELECT 1 FROM {self.store.table('incidents')} LIMIT 1"):
            return 0
        rows = self.store.query_rows(f"SELECT max(storedAt) FROM {self.store.events_table}")
        return int(rows[0][0] or 0) if rows else 0
