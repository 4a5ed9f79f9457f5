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
# the materialised `classification` first; the attribution JSON is parsed only for events that are not
# classified as agents and carry a non-empty attribution (JSONExtractBool of '', 'null', '{}' is 0)
MONITORED = ("(classification IN ('confirmed_agent', 'probable_agent') "
             "OR (attribution NOT IN ('', 'null', '{}') AND JSONExtractBool(attribution, 'monitored')))")
FINAL = "decisionStatus IN ('succeeded', 'failed', 'timeout')"
GROUP_LIMIT = 10000
UNIQ_LIMIT = 64
ACTIVE_MS = 5 * 60_000
IDLE_MS = 60 * 60_000
RISKY_EVENT_LIMIT = 500
HEALTH_STATES = ("risky", "active", "idle", "stale")


def _table(store) -> str:
    return store.events_table if store is not None else "events"


def _latest(store, columns: str = "") -> str:
    """Latest revision of every event in [start, end] (parameters `start`, `end`), final decisions
    only (`succeeded`, `failed`, `timeout`), as the historical aggregates count them (§29.1).
    `columns` (default: the identity, decision and `monitored` columns) are read from that revision.
    Without a store (an operator engine before it is connected) `_query` answers nothing."""
    columns = columns or ("eventId, at, workspacePath, agentId, collectorId, sourceId, verdict, severity, subject, "
                          f"traceId, {MONITORED} AS monitored")
    return ("SELECT * EXCEPT (final_) FROM ("
            f"SELECT {columns}, {FINAL} AS final_ "
            f"FROM {_table(store)} WHERE at >= {{start:UInt64}} AND at <= {{end:UInt64}} "
            "ORDER BY decisionUpdatedAt DESC LIMIT 1 BY eventId"
            ") WHERE final_")


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


# One pass over the latest revisions, grouped by (workspacePath, agentId, collectorId, sourceId): the
# agent and the collector facts are both sums / extremes over these few groups, so one query serves
# both (each query costs a window scan, a sort of its rows and ~5 ms of planning).
_EVENT_FACTS = (
    "SELECT ws, ag, col, src, count() AS n, countIf(r) AS nr, countIf(m) AS nm, max(m) AS mon, "
    "min(t) AS first, max(t) AS last, maxIf(t, r) AS rlast, argMax(id, t) AS lid, argMax(subj, t) AS lsubj, "
    "argMaxIf(id, t, r) AS rid, argMaxIf(subj, t, r) AS rsubj "
    "FROM ({latest}) GROUP BY ws, ag, col, src LIMIT 1000000"
)
_EVENT_COLUMNS = ("workspacePath AS ws, agentId AS ag, collectorId AS col, sourceId AS src, eventId AS id, "
                  f"subject AS subj, at AS t, {RISKY} AS r, {MONITORED} AS m")


async def event_facts(store, window: TimeWindow) -> tuple[dict[tuple[str, str], AgentFact], dict[str, CollectorFact]]:
    """(per (workspacePath, agentId) `AgentFact`s, per collectorId `CollectorFact`s) from one query."""
    sql = _EVENT_FACTS.format(latest=_latest(store, _EVENT_COLUMNS))
    rows = await _query(store, sql, {"start": window.start, "end": window.end})
    agents: dict[tuple[str, str], AgentFact] = {}
    agent_last: dict[tuple[str, str], tuple[int, int]] = {}  # key → (last, last risky) of the evidence rows
    collectors: dict[str, CollectorFact] = {}
    collector_seen: dict[str, tuple[set, set, int]] = {}   # cid → (agents, workspaces, last)
    agent_sets: dict[tuple[str, str], tuple[set, set]] = {}
    for row in rows:
        ws, ag, col, src = row["ws"], row["ag"], row["col"], row["src"]
        n, nr, first, last = int(row["n"]), int(row["nr"]), int(row["first"]), int(row["last"])
        key = (ws, ag)
        fact = agents.get(key)
        if fact is None:
            if len(agents) >= GROUP_LIMIT:
                fact = None
            else:
                fact = agents[key] = AgentFact(workspacePath=ws, agentId=ag, firstEventAt=first, lastEventAt=last,
                                               lastEventId=row["lid"], lastEventSubject=row["lsubj"])
                agent_sets[key] = (set(), set())
                agent_last[key] = (last, -1)
        if fact is not None:
            fact.eventCount += n
            fact.riskyEventCount += nr
            fact.firstEventAt = min(fact.firstEventAt, first)
            if last > agent_last[key][0]:
                fact.lastEventAt, fact.lastEventId, fact.lastEventSubject = last, row["lid"], row["lsubj"]
                agent_last[key] = (last, agent_last[key][1])
            if nr and int(row["rlast"]) > agent_last[key][1]:
                fact.lastRiskyEventId, fact.lastRiskySubject = row["rid"], row["rsubj"]
                agent_last[key] = (agent_last[key][0], int(row["rlast"]))
            if col:
                agent_sets[key][0].add(col)
            else:
                fact.eventsWithoutCollector += n
                fact.riskyEventsWithoutCollector += nr
            if src:
                agent_sets[key][1].add(src)
            fact.monitored = fact.monitored or bool(row["mon"])
        if not col:
            continue
        cfact = collectors.get(col)
        if cfact is None:
            if len(collectors) >= GROUP_LIMIT:
                continue
            cfact = collectors[col] = CollectorFact(collectorId=col, firstEventAt=first, lastEventAt=last,
                                                    lastEventId=row["lid"], lastEventSubject=row["lsubj"])
            collector_seen[col] = (set(), set(), last)
        seen_agents, workspaces, seen_last = collector_seen[col]
        cfact.eventCount += n
        cfact.monitoredEventCount += int(row["nm"])
        cfact.riskyEventCount += nr
        cfact.firstEventAt = min(cfact.firstEventAt, first)
        if last > seen_last:
            cfact.lastEventAt, cfact.lastEventId, cfact.lastEventSubject = last, row["lid"], row["lsubj"]
            collector_seen[col] = (seen_agents, workspaces, last)
        seen_agents.add(key)
        workspaces.add(ws)
    for key, (collector_ids, source_ids) in agent_sets.items():
        agents[key].collectorIds = sorted(collector_ids)[:UNIQ_LIMIT]
        agents[key].sourceIds = sorted(source_ids)[:UNIQ_LIMIT]
    for cid, (seen_agents, workspaces, _) in collector_seen.items():
        collectors[cid].agentCount = len(seen_agents)
        collectors[cid].workspaces = sorted(workspaces)[:UNIQ_LIMIT]
    return agents, collectors


async def agent_facts(store, window: TimeWindow) -> dict[tuple[str, str], AgentFact]:
    """Per (workspacePath, agentId): counts, last event, collectors and sources, monitored flag."""
    return (await event_facts(store, window))[0]


_RISKY_COLUMNS = "eventId, at, workspacePath, agentId, collectorId, sourceId, verdict, severity, subject, traceId"


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
           f"FROM ({_latest(store, _RISKY_COLUMNS)}) WHERE {' AND '.join(where)} ORDER BY at DESC LIMIT {{limit:UInt32}}")
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
