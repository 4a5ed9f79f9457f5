"""Two processes' books over one state table (`ops.sync`): what one writes — records and deletions —
reaches the other at its next refresh, except where the other holds a change it has not flushed."""

from __future__ import annotations

from anysentry.ops.book import Book
from anysentry.ops.sync import BookSync
from anysentry.store.state import StateTable


class Alerts(Book):
    table_name = "alerts"
    id_field = "alertId"


async def flush(store, book: Book) -> None:
    changed, deleted = book.drain()
    table = StateTable(store, book.table_name)
    if changed:
        await table.aput_many(changed)
    for key in deleted:
        await table.adelete(key)


async def test_records_and_deletions_cross_over_but_unflushed_changes_stay(store):
    here, there = Alerts(), Alerts()
    sync_here = BookSync(store, [here])

    there.put({"alertId": "al_1", "status": "open"})
    there.put({"alertId": "al_2", "status": "open"})
    await flush(store, there)
    assert await sync_here.refresh() == 2
    assert here.get("al_1") == {"alertId": "al_1", "status": "open"}
    assert await sync_here.refresh() == 0  # nothing new: nothing changes

    here.put({"alertId": "al_1", "status": "acknowledged"})  # changed here, not flushed yet
    there.put({"alertId": "al_1", "status": "resolved"})
    there.remove("al_2")
    await flush(store, there)
    await sync_here.refresh()
    assert here.get("al_1")["status"] == "acknowledged"  # the pending local change is kept ...
    assert here.get("al_2") is None  # ... the deletion made there is taken in
    changed, deleted = here.drain()
    assert list(changed) == ["al_1"] and deleted == []  # and only the local change is written back
