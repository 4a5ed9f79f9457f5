"""Linked events of an evidence bundle (SPEC §26): the bundle's only reads of the events table.

Kept apart from the link walk so every store read a bundle makes is in one place, each by exact ids
or exact column filters (never a keyword search) and bounded by the time window and a LIMIT:

1. explicit event ids (bloom index on eventId),
2. the ordered ids of the linked-event filter (a trace, an incident's events, a scope), then the full
   rows of exactly those ids (`at IN … AND eventId IN …`: the sort key prunes to their granules),
3. one aggregate for the counts and risk categories (or, for a narrow filter, one read summarized here).

A failed read is logged and counts as empty: a bundle is a read and must still be built."""

from __future__ import annotations

import logging

from anysentry.judge.risk import TAXONOMY
from anysentry.ops.inventory import SEVERITY_RANK
from anysentry.store.window import TimeWindow

log = logging.getLogger("anysentry.ops.evidence")

FINAL_SQL = "decisionStatus IN ('succeeded', 'failed', 'timeout')"
SEVERITY_SQL = "multiIf(severity = 'critical', 4, severity = 'high', 3, severity = 'medium', 2, severity = 'low', 1, 0)"
NEAR_MS = 6 * 3_600_000
SMALL_LINKED = 5000
FINAL_STATUSES = ("succeeded", "failed", "timeout")


def severity_rank(value: object) -> int:
    return SEVERITY_RANK.get(str(value or ""), 0)


class Filter:
    """Exact column equalities (and a few fixed conditions) selecting the linked events."""

    def __init__(self, **equal: str):
        self.conds: list[str] = []
        self.params: dict = {}
        for column, value in equal.items():
            if value:
                self.eq(column, value)

    def eq(self, column: str, value: str) -> "Filter":
        name = f"f{len(self.params)}"
        self.conds.append(f"{column} = {{{name}:String}}")
        self.params[name] = value
        return self

    def raw(self, sql: str, **params) -> "Filter":
        self.conds.append(sql)
        self.params.update(params)
        return self

    def __bool__(self) -> bool:
        return bool(self.conds)

    def matches(self, event: dict) -> bool:
        """Whether a fetched event row satisfies the plain equalities (used to count extras)."""
        for cond in self.conds:
            column, sep, rest = cond.partition(" = {")
            if not sep:
                continue
            name = rest.split(":", 1)[0]
            if str(event.get(column, "")) != self.params.get(name):
                return False
        return True


def incident_events(incident: dict) -> Filter:
    """The non-allow events grouped into an incident (its grouping key, §15)."""
    flt = Filter(workspacePath=incident.get("workspacePath", ""), agentId=incident.get("agentId", ""),
                 sessionId=incident.get("sessionId", ""), traceId=incident.get("traceId", ""),
                 runId=incident.get("runId", ""), riskCategory=incident.get("riskCategory", ""))
    flt.raw("verdict IN ('block', 'escalate')")
    return flt


class LinkedEvents:
    """Reads of the events a bundle links to; the store is looked up on the engine at each read."""

    def __init__(self, engine):
        self.engine = engine

    @property
    def store(self):
        return getattr(self.engine, "store", None)

    async def _q(self, sql: str, params: dict) -> list[dict]:
        store = self.store
        if store is None:
            return []
        try:
            return await store.aquery_dicts(sql, params)
        except Exception as exc:
            log.warning("evidence event read failed: %s", exc)
            return []

    async def rows_by_ids(self, ids: list[str]) -> dict[str, dict]:
        """Latest revision of explicitly linked events, across the retention period (bloom index)."""
        if not ids or self.store is None:
            return {}
        rows = await self._q(f"SELECT * FROM {self.store.events_table} WHERE eventId IN {{ids:Array(String)}} "
                             f"ORDER BY decisionUpdatedAt DESC LIMIT 1 BY eventId LIMIT {len(ids)}", {"ids": ids})
        return {r["eventId"]: r for r in rows}

    async def ids(self, flt: Filter, window: TimeWindow, n: int, anchor: int | None = None) -> list[tuple[str, int]]:
        """(eventId, at) of up to `n` linked events: nearest to `anchor`, else newest. Around an anchor
        the sort key first narrows the read to a few hours; the whole window only if that is not enough."""
        if not flt or self.store is None:
            return []
        if anchor and window.end - window.start > 2 * NEAR_MS:
            near = TimeWindow(max(window.start, anchor - NEAR_MS), min(window.end, anchor + NEAR_MS), window.time_type)
            found = await self._ids_in(flt, near, n, anchor)
            if len(found) >= n:
                return found
        return await self._ids_in(flt, window, n, anchor)

    async def _ids_in(self, flt: Filter, window: TimeWindow, n: int, anchor: int | None) -> list[tuple[str, int]]:
        order = "abs(toInt64(at) - {anchor:Int64}) ASC, at DESC" if anchor else "at DESC"
        params = {**flt.params, "start": window.start, "end": window.end, "n": n * 2}
        if anchor:
            params["anchor"] = anchor
        rows = await self._q(f"SELECT eventId, at FROM {self.store.events_table} WHERE {' AND '.join(flt.conds)} "
                             "AND at >= {start:UInt64} AND at <= {end:UInt64} "
                             f"ORDER BY {order} LIMIT {{n:UInt32}}", params)
        out: dict[str, int] = {}
        for row in rows:
            out.setdefault(row["eventId"], int(row["at"]))
            if len(out) >= n:
                break
        return list(out.items())

    async def rows_at(self, pairs: list[tuple[str, int]]) -> dict[str, dict]:
        """Full rows of known (eventId, at): the sort key narrows the read to their granules."""
        if not pairs or self.store is None:
            return {}
        rows = await self._q(f"SELECT * FROM {self.store.events_table} WHERE at IN {{ats:Array(UInt64)}} "
                             "AND eventId IN {ids:Array(String)}",
                             {"ats": sorted({a for _, a in pairs}), "ids": sorted({e for e, _ in pairs})})
        latest: dict[str, dict] = {}
        for row in rows:
            have = latest.get(row["eventId"])
            if have is None or int(row["decisionUpdatedAt"] or 0) >= int(have["decisionUpdatedAt"] or 0):
                latest[row["eventId"]] = row
        return latest

    async def linked(self, flt: Filter, window: TimeWindow, n: int, anchor: int | None,
                     small: bool) -> tuple[list[tuple[str, int]], int, list[dict], int]:
        """(ids to show, event count, risk categories, max severity rank) of the linked-event filter.

        A filter known to be narrow (a trace, a session, an incident) is read once as narrow rows and
        summarized here; a wide one (a workspace, a collector) as an ordered id read plus an aggregate."""
        if not flt or self.store is None:
            return [], 0, [], -1
        if small:
            rows = await self._qrows(
                "SELECT eventId, at, decisionUpdatedAt, decisionStatus, riskCategory, severity "
                f"FROM {self.store.events_table} WHERE {' AND '.join(flt.conds)} "
                f"AND at >= {{start:UInt64}} AND at <= {{end:UInt64}} LIMIT {SMALL_LINKED + 1}",
                {**flt.params, "start": window.start, "end": window.end})
            if len(rows) <= SMALL_LINKED:
                return summarize_rows(rows, n, anchor)
        pairs = await self.ids(flt, window, n, anchor)
        count, categories, rank = await self._aggregate(flt, window)
        return pairs, count, categories, rank

    async def _qrows(self, sql: str, params: dict) -> list[tuple]:
        try:
            return await self.store.aquery_rows(sql, params)
        except Exception as exc:
            log.warning("evidence event read failed: %s", exc)
            return []

    async def _aggregate(self, flt: Filter, window: TimeWindow) -> tuple[int, list[dict], int]:
        """(event count, risk categories, max severity rank) of the linked-event filter."""
        if not flt or self.store is None:
            return 0, [], -1
        rows = await self._q(
            f"SELECT riskCategory, uniqExact(eventId) AS n, max({SEVERITY_SQL}) AS rank, "
            f"grouping(riskCategory) AS total FROM {self.store.events_table} "
            f"WHERE {' AND '.join(flt.conds)} AND {FINAL_SQL} AND at >= {{start:UInt64}} AND at <= {{end:UInt64}} "
            "GROUP BY ROLLUP(riskCategory) LIMIT 200",
            {**flt.params, "start": window.start, "end": window.end})
        count, rank, categories = 0, -1, []
        for row in rows:
            if row["total"]:
                count, rank = int(row["n"]), int(row["rank"]) if int(row["n"]) else -1
            elif row["riskCategory"] and row["riskCategory"] != "benign":
                categories.append({"riskCategory": row["riskCategory"], "riskName": risk_name(row["riskCategory"]),
                                   "eventCount": int(row["n"])})
        categories.sort(key=lambda c: (-c["eventCount"], c["riskCategory"]))
        return count, categories, rank


def summarize_rows(rows: list[tuple], n: int, anchor: int | None) -> tuple[list[tuple[str, int]], int, list[dict], int]:
    """The `linked` summary of narrow rows (eventId, at, revision, status, category, name, severity):
    counts over final decisions as the aggregate would (§29.1), ids from the latest revisions."""
    latest: dict[str, tuple] = {}
    final: set[str] = set()
    categories: dict[str, dict] = {}
    seen: set[tuple[str, str]] = set()
    rank = -1
    for row in rows:
        event_id, at, revision, status, category, severity = row
        have = latest.get(event_id)
        if have is None or revision >= have[2]:
            latest[event_id] = row
        if status not in FINAL_STATUSES:
            continue
        final.add(event_id)
        rank = max(rank, severity_rank(severity))
        if category and category != "benign" and (event_id, category) not in seen:
            seen.add((event_id, category))
            entry = categories.setdefault(category, {"riskCategory": category, "riskName": risk_name(category), "eventCount": 0})
            entry["eventCount"] += 1
    if anchor:
        ordered = sorted(latest.values(), key=lambda r: (abs(int(r[1]) - anchor), -int(r[1])))
    else:
        ordered = sorted(latest.values(), key=lambda r: -int(r[1]))
    cats = sorted(categories.values(), key=lambda c: (-c["eventCount"], c["riskCategory"]))
    return [(r[0], int(r[1])) for r in ordered[:n]], len(final), cats, rank


def risk_name(category: str) -> str:
    return TAXONOMY.get(category, ("", category))[1]
