"""The collector's disk buffer: every observed item is on disk before it is sent, so an api outage
or a collector restart loses nothing; the shipper replays it in order and acknowledges what the api
answered. Bounded: when it is full the OLDEST records are dropped — loudly (a warning and the
heartbeat's droppedEvents) — because a node observer must keep observing the present.

It is the api's write-ahead log (store/wal.py) under other names: segments `seg-<base>.log`, the
acknowledged position in `cursor`, files 0600 in a 0700 directory (lines are raw until the api
redacts them), `LOCK` keeping a second collector out. A record's payload is the orjson
`[route, items]` of one chunk of items. One `append_many` = one write + one fdatasync."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from anysentry.store.wal import HEADER, WalLocked, WriteAheadLog, header

log = logging.getLogger(__name__)

ROUTES = ("batch", "falco", "tetragon")  # /ingest/batch, /ingest/falco, /ingest/tetragon
SEGMENT_BYTES = 8 * 1024 * 1024


class BufferLocked(RuntimeError):
    """Another collector process already uses this buffer directory."""


@dataclass(slots=True)
class Batch:
    """Items of consecutive records of one route; acknowledge `end` once the api has answered."""

    route: str
    items: list
    end: int


def _decode(payload: bytes | None, position: int) -> tuple[str, list] | None:
    if payload is None:
        return None  # damaged on disk (the log said so)
    try:
        route, items = orjson.loads(payload)
        if route in ROUTES and isinstance(items, list):
            return route, items
    except (ValueError, TypeError):
        pass
    log.error("buffer: unreadable record ending at %d; skipping it", position)
    return None


class DiskBuffer:
    """Append-only, fsynced, size-bounded queue of item lists. Thread-safe; one owner process."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int, segment_bytes: int = SEGMENT_BYTES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._log = WriteAheadLog(self.directory, max_bytes, segment_bytes,
                                      prefix="seg-", checkpoint_name="cursor", file_mode=0o600)
        except WalLocked:
            raise BufferLocked(f"buffer directory {self.directory} is used by another collector process") from None
        self.max_bytes, self.segment_bytes = self._log.max_bytes, self._log.segment_bytes
        self._append_lock = threading.Lock()  # making room and appending go together
        self.dropped_items = 0

    @property
    def pending_bytes(self) -> int:
        return self._log.pending_bytes

    @property
    def pending_items(self) -> int:
        return self._log.pending_events

    @property
    def cursor(self) -> int:
        return self._log.checkpoint

    # -- writing --------------------------------------------------------------------------------

    def append(self, route: str, items: list) -> int:
        """Write one record durably; returns how many items had to be dropped to make room."""
        return self.append_many(route, [items])

    def append_many(self, route: str, chunks: list[list]) -> int:
        """Write one record per chunk of items with one write and one fdatasync; returns how many
        items had to be dropped: the oldest kept ones to make room, or new ones that cannot fit."""
        if route not in ROUTES:
            raise ValueError(f"unknown buffer route {route!r}")
        records, dropped = [], 0
        for items in chunks:
            if not items:
                continue
            payload = orjson.dumps([route, items])
            size = HEADER.size + len(payload)
            if size > self.max_bytes:
                dropped += len(items)
                log.error("buffer: one record of %d bytes exceeds the whole buffer (%d bytes); dropped %d items",
                          size, self.max_bytes, len(items))
            else:
                records.append(((header(payload, len(items)), payload), size, len(items)))
        with self._append_lock:
            size, oldest = sum(record[1] for record in records), 0
            while size > self.max_bytes:  # more new items than the whole buffer holds: the newest stay
                size -= records[0][1]
                oldest += records.pop(0)[2]
            oldest += self._log.release_oldest(size)
            self.dropped_items += dropped + oldest
            outcomes = self._log.append_many(records) if records else []
        if oldest:
            log.warning("buffer full (%d bytes): dropped the %d oldest items that the api has not taken yet",
                        self.max_bytes, oldest)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # OSError: that segment's records are not kept; the caller still holds them
        return dropped + oldest

    # -- reading and acknowledging --------------------------------------------------------------

    def peek(self, max_items: int) -> Batch | None:
        """The oldest unacknowledged records of one route, at most `max_items` items (but at least
        one record), without removing them. Records damaged on disk are left out (and acknowledged
        when nothing readable precedes the next readable one)."""
        while True:
            cursor = self._log.checkpoint
            route, items, end = None, [], 0
            for position, count, payload in self._log.payloads():
                if route is not None and len(items) + count > max_items:
                    break
                decoded = _decode(payload, position)
                if decoded is None:
                    end = position  # released together with the batch
                    continue
                if route is not None and decoded[0] != route:
                    break
                route = decoded[0]
                items.extend(decoded[1])
                end = position
            if route is not None:
                return Batch(route, items, end)
            if end:
                self._log.acknowledge(end)  # nothing but damaged records: nothing to send
            elif self._log.checkpoint == cursor:
                return None
            # else: dropped while we read; start again at the new head

    def ack(self, position: int) -> None:
        """Everything up to `position` is done with (taken by the api, or rejected for good)."""
        self._log.acknowledge(position)

    def close(self) -> None:
        self._log.close()
