"""Helpers for the store tests (imported by name; fixtures live in tests/conftest.py): canonical events with current timestamps (rows older than the retention TTL
are dropped by the engine at insert time, so tests never use fixed dates)."""

from __future__ import annotations

import itertools
import time

from anysentry.events.model import AgentEvent

_seq = itertools.count()


def make_event(event_id: str | None = None, *, at: int | None = None, **fields) -> AgentEvent:
    n = next(_seq)
    at = at if at is not None else time.time_ns() // 1_000_000 - n % 1000
    values = dict(
        eventId=event_id or f"evt_{n:016x}",
        at=at,
        eventKind="ToolExec",
        eventCategory="tool",
        source="observer",
        subject=f"bash -c ls /w/{n}",
        workspacePath="/workspace",
        agentId="agent-1",
        sessionId=f"sess-{n % 7}",
        userId="uid:1000",
        traceId=f"trace-{n % 11}",
        spanId=f"span-{n}",
        runId="run-1",
        decisionUpdatedAt=at,
        attributes={"pid": 100 + n, "cwd": "/workspace"},
    )
    values.update(fields)
    return AgentEvent(**values)


def make_events(count: int, prefix: str = "evt") -> list[AgentEvent]:
    return [make_event(f"{prefix}_{next(_seq):012x}") for _ in range(count)]


def count_rows(store, where: str = "1") -> int:
    return int(store.query_rows(f"SELECT count() FROM {store.events_table} WHERE {where}")[0][0])
