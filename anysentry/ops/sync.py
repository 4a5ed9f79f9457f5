"""Books kept in step across processes through their state tables.

In a cluster several processes hold the same books in memory: the operator folds judged events and
runs the timers, every api replica serves reads and takes management writes (acknowledge, silence,
assign, ...). Each flushes its changes to the state tables; `BookSync.refresh` takes in what the
others wrote since the last look (deletions included), leaving alone the records this process has
changed and not flushed yet. A record is its own unit: when two processes change the same record
within one refresh interval, the later write wins."""

from __future__ import annotations

import asyncio
import logging

from anysentry.ops.book import Book
from anysentry.store.state import StateTable

log = logging.getLogger("anysentry.ops.sync")

# rows become readable a little after their write time is stamped: look back this far each time
OVERLAP_MS = 10_000


class BookSync:
    def __init__(self, store, books: list[Book]):
        self.store = store
        self.books = books
        self._since: dict[str, int] = {}

    async def refresh(self) -> int:
        """Merge every book's new rows; returns how many records changed. A store error is logged
        and retried at the next refresh from the same point."""
        changed = 0
        for book in list(self.books):
            since = self._since.get(book.table_name, 0)
            try:
                rows, newest = await StateTable(self.store, book.table_name).achanged_since(max(0, since - OVERLAP_MS))
            except Exception as exc:
                log.warning("refresh of %s from the store failed: %s", book.table_name, exc)
                continue
            changed += book.merge(rows)
            self._since[book.table_name] = max(since, newest)
        return changed

    def has_read(self, table_name: str) -> bool:
        """Whether the book of `table_name` took in the store's rows at least once."""
        return table_name in self._since


async def write_book(store, book: Book, changed: dict[str, dict], deleted: list[str]) -> None:
    """A book's drained changes into its state table (raises as the store does), then `book.stored`."""
    table = StateTable(store, book.table_name)
    if changed:
        await table.aput_many(changed)
    for key in deleted:
        await table.adelete(key)
    if changed and type(book).stored is not Book.stored:
        await asyncio.to_thread(book.stored, store)
