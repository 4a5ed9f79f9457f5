"""Event facts the coverage, objective and remediation areas read from the event store.

Each read keeps the latest decision revision per `eventId` (by `decisionUpdatedAt`, SPEC §29.1) and
binds every value as a `{name:Type}` parameter. A store that cannot answer yields no facts (and a
log line) rather than failing the caller: coverage then simply sees no agents."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from anysentry.store.window import TimeWindow

log = logging.getLogger("anysentry.ops.facts")

RISKY = "verdict IN ('block', 'escalate')"
MONITORED = ("(JSONExtractBool(attribution, 'monitored') "
             "OR classification IN ('confirmed_agent', 'probable_agent'))")
ACTIVE_MS = 5 * 60_000
IDLE_MS = 60 * 60_000
RISKY_EVENT_LIMIT = 500
HEALTH_STATES = ("risky", "active", "idle", "stale")


def _latest(store) -> str:
    """Latest revision of every event in [start, end] (parameters `start`, `end`), final decisions
    only (`succeeded`, `failed`, `timeout`), as the historical aggregates count them (§29.1).
    Without a store (an operator engine before it is connected) `_query` answers nothing."""
    table = store.events_table if store is not None else "events"
    return ("SELECT * FROM ("
            f"SELECT eventId, at, workspacePath, agentId, collectorId, sourceId, verdict, severity, subject, "
            f"traceId, decisionStatus, {MONITORED} AS monitored "
            f"FROM {table} WHERE at >= {{start:UInt64}} AND at <= {{end:UInt64}} "
            "ORDER BY decisionUpdatedAt DESC LIMIT 1 BY eventId"
            ") WHERE decisionStatus IN ('succeeded', 'failed', 'timeout')")


@dataclass
class AgentFact:
    workspacePath: str
    agentId: str
    eventCount: int = 0
    riskyEventCount: int = 0
    firstEventAt: int = 0
    lastEventAt: int = 0
    collectorIds: list[str] = field(default_factory=list)
    sourceIds: list[str] = field(default_factory=list)
    eventsWithoutCollector: int = 0
    riskyEventsWithoutCollector: int = 0
    lastEventId: str = ""
    lastEventSubject: str = ""
    lastRiskyEventId: str = ""
    lastRiskySubject: str = ""
    monitored: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.workspacePath, self.agentId


@dataclass
class CollectorFact:
    collectorId: str
    eventCount: int = 0
    monitoredEventCount: int = 0
    riskyEventCount: int = 0
    firstEventAt: int = 0
    lastEventAt: int = 0
    agentCount: int = 0
    workspaces: list[str] = field(default_factory=list)
    lastEventId: str = ""
    lastEventSubject: str = ""


async def _query(store, sql: str, params: dict) -> list[dict]:
    if store is None:
        return []
    try:
        return await store.aquery_dicts(sql, params)
    except Exception as exc:  # store down or not migrated yet: no facts, not a failed request
        log.warning("event facts unavailable: %s", exc)
        return []


async def agent_facts(store, window: TimeWindow) -> dict[tuple[str, str], AgentFact]:
    """Per (workspacePath, agentId): counts, last event, collectors and sources, monitored flag."""
    sql = (
        "SELECT workspacePath, agentId, count() AS eventCount, countIf(" + RISKY + ") AS riskyEventCount, "
        "min(at) AS firstEventAt, max(at) AS lastEventAt, "
        "groupUniqArrayIf(64)(collectorId, collectorId != '') AS collectorIds, "
        "groupUniqArrayIf(64)(sourceId, sourceId != '') AS sourceIds, "
        "countIf(collectorId = '') AS eventsWithoutCollector, "
        "countIf(collectorId = '' AND " + RISKY + ") AS riskyEventsWithoutCollector, "
        "argMax(eventId, at) AS lastEventId, argMax(subject, at) AS lastEventSubject, "
        "argMaxIf(eventId, at, " + RISKY + ") AS lastRiskyEventId, "
        "argMaxIf(subject, at, " + RISKY + ") AS lastRiskySubject, "
        "max(monitored) AS monitored "
        f"FROM ({_latest(store)}) GROUP BY workspacePath, agentId LIMIT 10000"
    )
    rows = await _query(store, sql, {"start": window.start, "end": window.end})
    out: dict[tuple[str, str], AgentFact] = {}
    for row in rows:
        fact = AgentFact(
            workspacePath=row["workspacePath"], agentId=row["agentId"], eventCount=int(row["eventCount"]),
            riskyEventCount=int(row["riskyEventCount"]), firstEventAt=int(row["firstEventAt"]),
            lastEventAt=int(row["lastEventAt"]), collectorIds=sorted(row["collectorIds"]),
            sourceIds=sorted(row["sourceIds"]), eventsWithoutCollector=int(row["eventsWithoutCollector"]),
            riskyEventsWithoutCollector=int(row["riskyEventsWithoutCollector"]), lastEventId=row["lastEventId"],
            lastEventSubject=row["lastEventSubject"], lastRiskyEventId=row["lastRiskyEventId"],
            lastRiskySubject=row["lastRiskySubject"], monitored=bool(row["monitored"]),
        )
        out[fact.key] = fact
    return out


async def collector_facts(store, window: TimeWindow) -> dict[str, CollectorFact]:
    """Per collectorId seen on events in the window."""
    sql = (
        "SELECT collectorId, count() AS eventCount, countIf(monitored) AS monitoredEventCount, "
        "countIf(" + RISKY + ") AS riskyEventCount, min(at) AS firstEventAt, max(at) AS lastEventAt, "
        "uniqExact(workspacePath, agentId) AS agentCount, groupUniqArray(64)(workspacePath) AS workspaces, "
        "argMax(eventId, at) AS lastEventId, argMax(subject, at) AS lastEventSubject "
        f"FROM ({_latest(store)}) WHERE collectorId != '' GROUP BY collectorId LIMIT 10000"
    )
    rows = await _query(store, sql, {"start": window.start, "end": window.end})
    return {
        row["collectorId"]: CollectorFact(
            collectorId=row["collectorId"], eventCount=int(row["eventCount"]),
            monitoredEventCount=int(row["monitoredEventCount"]), riskyEventCount=int(row["riskyEventCount"]),
            firstEventAt=int(row["firstEventAt"]), lastEventAt=int(row["lastEventAt"]),
            agentCount=int(row["agentCount"]), workspaces=sorted(row["workspaces"]),
            lastEventId=row["lastEventId"], lastEventSubject=row["lastEventSubject"])
        for row in rows
    }


async def risky_events(store, window: TimeWindow, *, workspace: str = "", agent: str = "",
                       collectors: list[str] | None = None, source: str = "",
                       limit: int = RISKY_EVENT_LIMIT) -> list[dict]:
    """Non-allow events in scope, newest first, at most `limit` (the events list limit, 500)."""
    where = [RISKY]
    params: dict = {"start": window.start, "end": window.end, "limit": max(1, min(RISKY_EVENT_LIMIT, limit))}
    if workspace:
        where.append("workspacePath = {ws:String}")
        params["ws"] = workspace
    if agent:
        where.append("agentId = {agent:String}")
        params["agent"] = agent
    if collectors is not None:
        where.append("has({collectors:Array(String)}, collectorId)")
        params["collectors"] = list(collectors)
    if source:
        where.append("sourceId = {source:String}")
        params["source"] = source
    sql = (f"SELECT eventId, at, workspacePath, agentId, collectorId, sourceId, severity, subject, traceId "
           f"FROM ({_latest(store)}) WHERE {' AND '.join(where)} ORDER BY at DESC LIMIT {{limit:UInt32}}")
    return await _query(store, sql, params)


def open_incident_counts(engine) -> dict[tuple[str, str], int]:
    """Open incidents per (workspacePath, agentId), from the incidents book when it is there."""
    incidents = getattr(engine, "incidents", None)
    out: dict[tuple[str, str], int] = {}
    if incidents is None:
        return out
    for incident in incidents.values():
        if incident.get("status") == "open":
            key = (incident.get("workspacePath") or "", incident.get("agentId") or "")
            out[key] = out.get(key, 0) + 1
    return out


def activity_state(last_event_at: int, now: int) -> str:
    """active (≤ 5 min), idle (≤ 60 min) or stale — the time part of §24.1."""
    age = now - (last_event_at or 0)
    if age <= ACTIVE_MS:
        return "active"
    if age <= IDLE_MS:
        return "idle"
    return "stale"


def health_state(fact: AgentFact, open_incidents: int, now: int) -> str:
    """§24.1: risky if any open incident, else active / idle / stale by the last event."""
    return "risky" if open_incidents else activity_state(fact.lastEventAt, now)


def agents_by_health(facts: dict[tuple[str, str], AgentFact], open_counts: dict[tuple[str, str], int],
                     now: int) -> dict[str, list[AgentFact]]:
    out: dict[str, list[AgentFact]] = {state: [] for state in HEALTH_STATES}
    for key, fact in facts.items():
        out[health_state(fact, open_counts.get(key, 0), now)].append(fact)
    return out
