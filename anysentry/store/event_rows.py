"""Events as rows: the one serialised form of a batch of AgentEvents — a record of the durable log,
what the ingest workers hand back, and what the store insert parses.

A payload is a JSON array whose first element names the fields and each later one holds an event's
values in that order: `[["eventId","at",…],["evt_…",1700000000000,…],…]`. Without the names repeated
on every event it is a third smaller than an array of objects, cheaper to write (orjson serialises
tuples ~4× faster than slotted dataclasses) and to parse (the engine reads it as
JSONCompactEachRowWithNames, by name). The names keep a record readable whatever fields a later
release adds; a log an earlier release wrote (an array of objects) is read too."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from anysentry.events.model import EVENT_FIELDS, AgentEvent, event_values

INSERT_FORMAT = "JSONCompactEachRowWithNames"
NAMES = orjson.dumps(list(EVENT_FIELDS))
_HEAD = b"[" + NAMES  # how a payload of this release starts


def payload(events: Sequence[AgentEvent]) -> bytes:
    """The rows payload of `events` (names first)."""
    rows: list = [EVENT_FIELDS]
    rows.extend(map(event_values, events))
    return orjson.dumps(rows)


def decode(data: bytes | bytearray | memoryview) -> list[AgentEvent]:
    """The events of a payload of any release: rows with their names, or an array of objects."""
    items = orjson.loads(data)
    if items and isinstance(items[0], list):
        names = items[0]
        return [AgentEvent.from_dict(dict(zip(names, row))) for row in items[1:]]
    return [AgentEvent.from_dict(item) for item in items]


def join(payloads: Sequence[bytes | bytearray]) -> bytes | bytearray:
    """One payload holding the events of several, each event copied once."""
    if len(payloads) == 1:
        return payloads[0]
    out = bytearray(_HEAD)
    for part in _current(payloads):
        rows = _rows(part)
        if len(rows):
            out += b","
            out += rows
    out += b"]"
    return out


def insert_buffers(payloads: Sequence[bytes | bytearray]) -> list:
    """The input of one `INSERT … FORMAT JSONCompactEachRowWithNames` for these payloads, as buffers
    to write in order (slices, no copies): the names, then every row; empty when there is no row."""
    buffers: list = [NAMES]
    for part in _current(payloads):
        rows = _rows(part)
        if len(rows):
            buffers += (b",", rows)
    return buffers if len(buffers) > 1 else []


def _current(payloads: Sequence[bytes | bytearray]) -> list:
    """The payloads in this release's form: one that is not (an earlier or later release wrote it to
    the log) is decoded and written again — only ever while such a log is replayed."""
    return [part if part[: len(_HEAD)] == _HEAD else payload(decode(part)) for part in payloads]


def _rows(part: bytes | bytearray) -> memoryview:
    """The rows of a payload of this release, without the names and the enclosing brackets."""
    return memoryview(part)[len(_HEAD) + 1 : -1]
