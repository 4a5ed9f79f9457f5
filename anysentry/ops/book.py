"""A book of operational records (incidents, alerts, tasks, windows, ...) kept in memory and
written through to a store state table when dirty.

The operations engine reads and changes its state on every event and every timer tick; keeping it in
memory makes that cheap, and the periodic flush makes it survive a restart."""

from __future__ import annotations

from typing import Callable, Iterable


class Book:
    """Records by id. Subclasses add the domain logic; `table` is a `store.state.StateTable`."""

    table_name: str = ""
    id_field: str = "id"
    max_records: int | None = None

    def __init__(self):
        self.records: dict[str, dict] = {}
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()
        self.change_listeners: list[Callable[[dict], None]] = []

    def load(self, records: Iterable[dict]) -> None:
        for record in records:
            key = record.get(self.id_field)
            if key:
                self.records[key] = record

    def stored(self, store) -> None:
        """Called (in a thread) after changed records of this book were written to `store`."""

    def merge(self, rows: Iterable[tuple[str, bool, dict]]) -> int:
        """Take what another process wrote — (id, deleted, body) rows of the state table — except where
        this book holds a change it has not flushed yet (that change is written next and wins).
        Returns how many records changed."""
        removed, upserts = 0, []
        for key, deleted, body in rows:
            if key in self._dirty or key in self._deleted:
                continue
            if deleted:
                if key in self.records:
                    self.remove(key)
                    self._deleted.discard(key)  # removed there, not here: nothing to write back
                    removed += 1
            elif self.records.get(key) != body:
                upserts.append(body)
        if upserts:
            self.load(upserts)
        return removed + len(upserts)

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def values(self) -> list[dict]:
        return list(self.records.values())

    def put(self, record: dict) -> dict:
        key = record[self.id_field]
        self.records[key] = record
        self.touch(record)
        self._trim()
        return record

    def touch(self, record: dict) -> None:
        self._dirty.add(record[self.id_field])
        for listener in self.change_listeners:
            listener(record)

    def remove(self, key: str) -> None:
        if self.records.pop(key, None) is not None:
            self._deleted.add(key)
            self._dirty.discard(key)

    def _trim(self) -> None:
        """Keep at most `max_records`, dropping the oldest by `updatedAt` (SPEC caps state sizes)."""
        if self.max_records is None or len(self.records) <= self.max_records:
            return
        excess = len(self.records) - self.max_records
        for record in sorted(self.records.values(), key=lambda r: r.get("updatedAt") or 0)[:excess]:
            self.remove(record[self.id_field])

    def drain(self) -> tuple[dict[str, dict], list[str]]:
        """(changed records by id, deleted ids) since the last drain, for the state flush."""
        changed = {k: self.records[k] for k in self._dirty if k in self.records}
        deleted = list(self._deleted)
        self._dirty.clear()
        self._deleted.clear()
        return changed, deleted

    def restore(self, changed: dict[str, dict], deleted: list[str]) -> None:
        """Put back what a failed flush drained, so the next flush retries it."""
        self._dirty.update(changed)
        self._deleted.update(deleted)
