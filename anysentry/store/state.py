"""Control-plane state (sources, incidents, alerts, …, config) as rows of versioned JSON documents.

Each write goes straight to the store as a new row (`version` = monotonic ns); `ReplacingMergeTree`
keeps the newest version per id and `FINAL` reads see only it, so there is no read-modify-write
race inside the database and any replica reads what another wrote. A delete is a tombstone row."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson

from anysentry.store.client import Store
from anysentry.store.schema import APPEND_STATE_TABLES, STATE_TABLES

_version_lock = threading.Lock()
_last_version = 0


def next_version() -> int:
    """Strictly increasing nanosecond stamps, even when the clock stalls or two writes share a tick."""
    global _last_version
    with _version_lock:
        _last_version = max(_last_version + 1, time.time_ns())
        return _last_version


class StateTable:
    """Write-through repository over one state table: every call is one store round trip."""

    def __init__(self, store: Store, name: str):
        if name not in STATE_TABLES:
            raise ValueError(f"unknown state table {name!r}; known: {', '.join(STATE_TABLES)}")
        self.store = store
        self.name = name
        self._has_at = name in APPEND_STATE_TABLES
        self._columns = ["id", "version", "deleted", "updatedAt", "body"] + (["at"] if self._has_at else [])
        self._types = ["String", "UInt64", "UInt8", "UInt64", "String"] + (["UInt64"] if self._has_at else [])

    @property
    def table(self) -> str:
        return self.store.table(self.name)

    def _write(self, rows: list[tuple[str, bool, bytes, int]]) -> None:
        now = time.time_ns() // 1_000_000
        data = []
        for id_, deleted, body, at in rows:
            row = [str(id_), next_version(), 1 if deleted else 0, now, body.decode()]
            if self._has_at:
                row.append(at or now)
            data.append(row)
        self.store.client.insert(self.table, data, column_names=self._columns, column_type_names=self._types)

    @staticmethod
    def _at_of(body: dict) -> int:
        at = body.get("at") if isinstance(body, dict) else None
        return at if isinstance(at, int) and not isinstance(at, bool) and at > 0 else 0

    def put(self, id: str, body: dict) -> None:
        self._write([(id, False, orjson.dumps(body), self._at_of(body))])

    def put_many(self, items: dict[str, dict]) -> None:
        """Several documents in one insert (one part instead of many)."""
        if items:
            self._write([(id_, False, orjson.dumps(body), self._at_of(body)) for id_, body in items.items()])

    def delete(self, id: str) -> None:
        self._write([(id, True, b"{}", 0)])

    def get(self, id: str) -> dict | None:
        rows = self.store.query_rows(
            f"SELECT body, deleted FROM {self.table} FINAL WHERE id = {{id:String}}", {"id": str(id)}
        )
        if not rows or rows[0][1]:
            return None
        return orjson.loads(rows[0][0])

    def items(self) -> list[tuple[str, dict]]:
        """(id, body) of every live document, by id."""
        rows = self.store.query_rows(f"SELECT id, body FROM {self.table} FINAL WHERE deleted = 0 ORDER BY id")
        return [(id_, orjson.loads(body)) for id_, body in rows]

    def all(self) -> list[dict]:
        return [body for _, body in self.items()]

    def changed_since(self, since_ms: int) -> tuple[list[tuple[str, bool, dict]], int]:
        """Rows written after `since_ms` (store write time), deletions included, as (id, deleted, body),
        and the newest write time among them (`since_ms` when none): how replicas follow each other."""
        rows = self.store.query_rows(
            f"SELECT id, deleted, updatedAt, body FROM {self.table} FINAL WHERE updatedAt > {{since:UInt64}}",
            {"since": max(0, int(since_ms))},
        )
        newest = max((row[2] for row in rows), default=since_ms)
        return [(id_, bool(deleted), {} if deleted else orjson.loads(body)) for id_, deleted, _, body in rows], newest

    async def aput(self, id: str, body: dict) -> None:
        await asyncio.to_thread(self.put, id, body)

    async def aput_many(self, items: dict[str, dict]) -> None:
        await asyncio.to_thread(self.put_many, items)

    async def adelete(self, id: str) -> None:
        await asyncio.to_thread(self.delete, id)

    async def aget(self, id: str) -> dict | None:
        return await asyncio.to_thread(self.get, id)

    async def aitems(self) -> list[tuple[str, dict]]:
        return await asyncio.to_thread(self.items)

    async def aall(self) -> list[dict]:
        return await asyncio.to_thread(self.all)

    async def achanged_since(self, since_ms: int) -> tuple[list[tuple[str, bool, dict]], int]:
        return await asyncio.to_thread(self.changed_since, since_ms)


class ConfigStore:
    """Standalone configuration as key → JSON value (policy, model connections, …)."""

    def __init__(self, store: Store):
        self.table = StateTable(store, "config")

    def get(self, key: str, default: Any = None) -> Any:
        body = self.table.get(key)
        return default if body is None else body.get("value", default)

    def put(self, key: str, value: Any) -> None:
        self.table.put(key, {"key": key, "value": value})

    def delete(self, key: str) -> None:
        self.table.delete(key)

    def all(self) -> dict[str, Any]:
        return {key: body.get("value") for key, body in self.table.items()}

    async def aget(self, key: str, default: Any = None) -> Any:
        return await asyncio.to_thread(self.get, key, default)

    async def aput(self, key: str, value: Any) -> None:
        await asyncio.to_thread(self.put, key, value)

    async def adelete(self, key: str) -> None:
        await asyncio.to_thread(self.delete, key)

    async def aall(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.all)
