"""Event reads over the append-only events table: the list (SPEC §14.1), the timeline (§14.2),
`/stats` (§28.2) and per-collector figures (§23.2); the dashboard aggregates live in `aggregates`,
the row → list item shape (§7.2) in `event_items`.

Every read sees one row per event, its latest decision revision (§29.1). The list follows the
durable-search order of §29.1 (`ORDER BY at DESC, decisionUpdatedAt DESC LIMIT 1 BY eventId`), but
never over the whole window at once: a `LIMIT 1 BY` stops ClickHouse from reading the sort key in
order, so over 1M rows it costs ~300 ms. Instead the newest slice of the window is read first (60 s,
then 4x wider each round) until enough rows are found, with narrow columns; whole rows are then
fetched for the chosen ids only. Aggregates use `argMax(…, decisionUpdatedAt)` grouped by
`cityHash64(eventId)` (4-5x faster than grouping by the string).

Identity and correlation fields (agent, workspace, session, trace, run, collector, source, kind,
category, classification) are the same in every revision of an event and are filtered per row, so
the primary key and the bloom indexes can skip data; decision fields (verdict, tier, subject/reason
of `q`, noise) are filtered on the latest revision only. Values are always bound server-side
(`{name:Type}`), never spliced into SQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from anysentry.events import kinds as K
from anysentry.events.timefmt import display_time, now_ms
from anysentry.judge.decision import TIERS, VERDICTS
from anysentry.store.event_items import agent_asset_id, json_field, list_item
from anysentry.store.window import TimeWindow

LIST_LIMIT = (1, 200, 40)  # (min, max, default) — §14.1
TIMELINE_LIMIT = (1, 500, 120)  # §14.2
COMPACT_WINDOW_MS = 3_000
FIRST_SLICE_MS = 15_000
SLICE_GROWTH = 4
EXACT_TOTAL_ROWS = 20_000  # above this many matching rows `total` is an estimate (`totalExact: false`)
MAX_PINS = 200
STATS_SAMPLE = 12

FINAL_STATUSES = "decisionStatus IN ('succeeded', 'failed', 'timeout')"
LATEST_BY = "ORDER BY at DESC, decisionUpdatedAt DESC LIMIT 1 BY eventId"
AGENT_CLASSES = ("confirmed_agent", "probable_agent")
# attribution.classification without parsing JSON for the (many) events that carry no attribution
CLASSIFICATION_SQL = "classification"  # materialised column (schema.py)

# Agent noise (§14.1): allowed ProcessExit, loopback egress to the proxy/api ports, trivial host-info
# commands. Only ever allowed events: a judged risk is never hidden as noise.
NOISE_PORTS = (7890, 29653)
LOOPBACK_PEERS = ("127.0.0.1", "localhost", "::1", "[::1]")
NOISE_SUBJECTS = tuple(f"egress → {peer}:{port}" for peer in LOOPBACK_PEERS for port in NOISE_PORTS)
TRIVIAL_COMMANDS = ("uname", "who", "whoami", "id", "hostname", "hostnamectl", "pwd", "date", "uptime", "arch",
                    "nproc", "tty", "groups", "w", "lsb_release")
_SQL_LIST = lambda values: "(" + ", ".join("'" + v.replace("'", "\\'") + "'" for v in values) + ")"  # noqa: E731 (constants only)
NOISE_SQL = (
    "(verdict = 'allow' AND (eventKind = 'ProcessExit'"
    f" OR (eventKind = 'Egress' AND subject IN {_SQL_LIST(NOISE_SUBJECTS)})"
    f" OR (eventKind = 'ToolExec' AND extract(subject, '^(?:[^ ]*/)?([^ /]+)') IN {_SQL_LIST(TRIVIAL_COMMANDS)})))"
)

# exact filters: body key → column (identity/correlation: filtered per row)
ROW_FILTERS = (
    ("sourceId", "sourceId"), ("collectorId", "collectorId"), ("agentId", "agentId"), ("sessionId", "sessionId"),
    ("workspacePath", "workspacePath"), ("traceId", "traceId"), ("runId", "runId"),
)
# columns phase 1 reads (narrow: enough to filter, order and compact)
_NARROW = ("eventId", "at", "decisionUpdatedAt", "agentId", "workspacePath", "eventKind", "verdict", "tier",
           "riskCategory", "subject", "reason")


class Sql:
    """Collects server-side parameters while a statement is built: `bind(v, 'String')` → `{p0:String}`."""

    def __init__(self) -> None:
        self.params: dict = {}

    def bind(self, value, type_: str) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return "{%s:%s}" % (name, type_)


def _text(value: object, limit: int = 1024) -> str:
    if value is None or isinstance(value, (dict, list, bool)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()[:limit]


def _clamp(value: object, low: int, high: int, default: int) -> int:
    try:
        number = int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return default
    return max(low, min(high, number))


def _ids(value: object) -> tuple[str, ...]:
    """`eventId` selectors: one id, a comma list, or an array; de-duplicated, in order."""
    raw = value if isinstance(value, list) else (_text(value, 8192).split(",") if value is not None else [])
    out: dict[str, None] = {}
    for item in raw[:MAX_PINS]:
        text = _text(item, 256)
        if text:
            out[text] = None
    return tuple(out)


def _bool(value: object, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    return default


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A sanitised §14.1 body: never rejects; invalid enums fall back to their default."""

    window: TimeWindow
    scope: str = "raw"
    include_unknown: bool = True
    noise: str = "hide"
    pins: tuple[str, ...] = ()
    exact: tuple[tuple[str, str], ...] = ()  # (column, value) identity filters
    agent_asset_id: str = ""
    event_kind: str = ""
    event_category: str = ""
    verdict: str = ""
    tier: str = ""
    q: str = ""
    limit: int = 40
    asset_pairs: tuple[tuple[str, str], ...] = ()  # (agentId, workspacePath) resolving to agent_asset_id

    @classmethod
    def from_body(cls, body: dict | None, *, limits: tuple[int, int, int] = LIST_LIMIT, now: int | None = None) -> "EventQuery":
        body = body if isinstance(body, dict) else {}
        scope = _text(body.get("scope")).lower()
        noise = _text(body.get("noise")).lower()
        verdict = _text(body.get("verdict")).lower()
        tier = _text(body.get("tier"))
        tier = next((t for t in TIERS if t.lower() == tier.lower()), "")
        category = _text(body.get("eventCategory")).lower()
        kind = K.canonical_kind(_text(body.get("eventKind"), 128)) if _text(body.get("eventKind")) else ""
        low, high, default = limits
        return cls(
            window=TimeWindow.from_body(body, now=now),
            scope="agent" if scope == "agent" else "raw",
            include_unknown=_bool(body.get("includeUnknown"), True),
            noise="include" if noise == "include" else "hide",
            pins=_ids(body.get("eventId")),
            exact=tuple((column, _text(body.get(key))) for key, column in ROW_FILTERS if _text(body.get(key))),
            agent_asset_id=_text(body.get("agentAssetId"), 64),
            event_kind=kind,
            event_category=category if category in K.CATEGORIES else "",
            verdict=verdict if verdict in VERDICTS else "",
            tier=tier,
            q=_text(body.get("q"), 256),
            limit=_clamp(body.get("limit"), low, high, default),
        )

    @property
    def has_filters(self) -> bool:
        """Any selector besides the pins (§3.6: only pins → exactly the pinned rows)."""
        return bool(self.exact or self.agent_asset_id or self.event_kind or self.event_category or self.verdict
                    or self.tier or self.q)

    @property
    def compacts(self) -> bool:
        return self.scope == "agent"

    def narrow_columns(self) -> tuple[str, ...]:
        """What phase 1 must read: ids and order, plus what compaction and the latest-revision
        filters look at (strings only when needed: they dominate the cost of a slice)."""
        wanted = {"eventId", "at", "decisionUpdatedAt"}
        if self.compacts:
            wanted |= {"agentId", "workspacePath", "eventKind", "verdict", "riskCategory", "subject"}
        if self.verdict:
            wanted.add("verdict")
        if self.tier:
            wanted.add("tier")
        if self.q:
            wanted |= {"subject", "reason", "agentId", "workspacePath"}
        if self.scope == "agent" and self.noise == "hide":
            wanted |= {"verdict", "eventKind", "subject"}
        return tuple(c for c in _NARROW if c in wanted)

    # -- predicates ---------------------------------------------------------------------------

    def row_predicates(self, sql: Sql, *, window: TimeWindow | None = None, exclude_pins: bool = True) -> list[str]:
        """Per-row filters: time window, identity/correlation fields, classification scope."""
        window = window or self.window
        out = [f"at >= {sql.bind(window.start, 'UInt64')}", f"at <= {sql.bind(window.end, 'UInt64')}"]
        for column, value in self.exact:
            out.append(f"{column} = {sql.bind(value, 'String')}")
        if self.event_kind:
            out.append(f"eventKind = {sql.bind(self.event_kind, 'String')}")
        if self.event_category:
            out.append(f"eventCategory = {sql.bind(self.event_category, 'String')}")
        if self.scope == "agent":
            out.append(f"{CLASSIFICATION_SQL} IN {_SQL_LIST(AGENT_CLASSES)}")
        elif not self.include_unknown:
            out.append(f"{CLASSIFICATION_SQL} NOT IN ('', 'unknown', 'non_agent')")
        # raw scope also hides non_agent: such events are discarded by routing (§7.7) and never
        # stored, so no per-row JSON check is spent on it here.
        if self.scope == "raw" and not self.event_kind and self.noise == "hide":
            out.append("eventKind != 'ProcessExit'")
        if self.agent_asset_id:
            pairs = list(self.asset_pairs) or [("", "")]
            out.append(f"(agentId, workspacePath) IN {sql.bind(pairs, 'Array(Tuple(String, String))')}")
        if exclude_pins and self.pins:
            out.append(f"eventId NOT IN {sql.bind(list(self.pins), 'Array(String)')}")
        return out

    def latest_predicates(self, sql: Sql) -> list[str]:
        """Filters on decision fields, applied to the latest revision only."""
        out = []
        if self.verdict:
            out.append(f"verdict = {sql.bind(self.verdict, 'String')}")
        if self.tier:
            out.append(f"tier = {sql.bind(self.tier, 'String')}")
        if self.q:
            needle = sql.bind(self.q, "String")
            out.append("(" + " OR ".join(f"positionCaseInsensitiveUTF8({c}, {needle}) > 0"
                                         for c in ("subject", "reason", "agentId", "workspacePath", "eventId")) + ")")
        if self.scope == "agent" and self.noise == "hide":
            out.append(f"NOT {NOISE_SQL}")
        return out


# -- compaction ------------------------------------------------------------------------------

def _compact_key(row: dict) -> tuple:
    return (row["agentId"], row["workspacePath"], row["eventKind"], row["verdict"], row["riskCategory"], row["subject"])


def compact(rows: list[dict]) -> list[list[dict]]:
    """Newest-first rows → runs of consecutive repeats (same agent label, kind, verdict, risk
    category and subject, each within 3 s of the next)."""
    groups: list[list[dict]] = []
    for row in rows:
        last = groups[-1] if groups else None
        if last and _compact_key(last[-1]) == _compact_key(row) and last[-1]["at"] - row["at"] <= COMPACT_WINDOW_MS:
            last.append(row)
        else:
            groups.append([row])
    return groups


# -- the reader -------------------------------------------------------------------------------

@dataclass
class EventQueries:
    """Reads for the API and the operations loops. Sync methods block (chdb/HTTP); the `a*` twins
    (and `collector_stats`, awaited by the collectors route) run them in a thread."""

    store: object
    overlay: Callable[[dict], str | None] | None = None  # review overlay → effectiveClassification

    @property
    def table(self) -> str:
        return self.store.events_table

    # -- rows -----------------------------------------------------------------------------------

    def _full_rows(self, ids: list[str]) -> dict[str, dict]:
        """Latest whole row of each id, across all time (pins): by decisionUpdatedAt."""
        if not ids:
            return {}
        sql = Sql()
        rows = self.store.query_dicts(
            f"SELECT * FROM {self.table} WHERE eventId IN {sql.bind(ids, 'Array(String)')} "
            "ORDER BY decisionUpdatedAt DESC, at DESC LIMIT 1 BY eventId", sql.params)
        return {row["eventId"]: row for row in rows}

    def _rows_at(self, chosen: list[dict]) -> dict[str, dict]:
        """Whole rows of the revisions phase 1 chose: exact (eventId, at, decisionUpdatedAt) keys and
        their `at` range, so the sort key skips everything else and nothing needs sorting."""
        if not chosen:
            return {}
        sql = Sql()
        ats = [int(row["at"]) for row in chosen]
        keys = [(row["eventId"], int(row["decisionUpdatedAt"])) for row in chosen]
        rows = self.store.query_dicts(
            f"SELECT * FROM {self.table} WHERE at >= {sql.bind(min(ats), 'UInt64')} AND at <= {sql.bind(max(ats), 'UInt64')} "
            f"AND (eventId, decisionUpdatedAt) IN {sql.bind(keys, 'Array(Tuple(String, UInt64))')}", sql.params)
        out: dict[str, dict] = {}
        for row in rows:
            out.setdefault(row["eventId"], row)
        return out

    def resolve_asset(self, query: EventQuery) -> EventQuery:
        """`agentAssetId` → the (agentId, workspacePath) pairs of the window whose identity (from
        their latest event's attribution and process) hashes to it (§4.2)."""
        if not query.agent_asset_id or query.asset_pairs:
            return query
        sql = Sql()
        window = f"at >= {sql.bind(query.window.start, 'UInt64')} AND at <= {sql.bind(query.window.end, 'UInt64')}"
        if query.pins and not query.has_filters:
            return query
        rows = self.store.query_rows(
            f"SELECT agentId, workspacePath, argMax(attribution, at), argMax(process, at) FROM {self.table} "
            f"WHERE {window} GROUP BY agentId, workspacePath", sql.params)
        pairs = tuple((agent, workspace) for agent, workspace, attribution, process in rows
                      if agent_asset_id(agent, workspace, json_field(attribution, "attribution"), json_field(process, "process"))
                      == query.agent_asset_id)
        return replace(query, asset_pairs=pairs or (("", ""),))

    def pinned_rows(self, ids) -> list[dict]:
        found = self._full_rows(list(ids))
        return sorted(found.values(), key=lambda r: (-int(r["at"]), r["eventId"]))

    def _stale(self, chosen: list[dict], high: int) -> set[str]:
        """Ids whose chosen revision is not their latest up to `high`: a slice sees only the
        revisions inside it, so an older revision can match a filter its newer one does not."""
        if not chosen:
            return set()
        sql = Sql()
        rows = self.store.query_rows(
            f"SELECT eventId, max((at, decisionUpdatedAt)) FROM {self.table} "
            f"WHERE at >= {sql.bind(min(int(r['at']) for r in chosen), 'UInt64')} AND at <= {sql.bind(high, 'UInt64')} "
            f"AND eventId IN {sql.bind([r['eventId'] for r in chosen], 'Array(String)')} GROUP BY eventId", sql.params)
        latest = {event_id: (int(at), int(updated)) for event_id, (at, updated) in rows}
        return {r["eventId"] for r in chosen if latest.get(r["eventId"], (0, 0)) > (int(r["at"]), int(r["decisionUpdatedAt"]))}

    def _slice(self, query: EventQuery, low: int, high: int, cap: int) -> list[dict]:
        sql = Sql()
        window = TimeWindow(low, high, query.window.time_type)
        inner = " AND ".join(query.row_predicates(sql, window=window))
        outer = query.latest_predicates(sql)
        columns = ", ".join(query.narrow_columns())
        statement = (
            f"SELECT {columns} FROM ("
            f"SELECT {columns} FROM {self.table} WHERE {inner} {LATEST_BY}"
            f") {'WHERE ' + ' AND '.join(outer) if outer else ''} ORDER BY at DESC, eventId DESC "
            f"LIMIT {sql.bind(cap, 'UInt32')}"
        )
        return self.store.query_dicts(statement, sql.params)

    def candidates(self, query: EventQuery, need: int) -> list[dict]:
        """Phase 1: the newest `need` matching events (narrow rows, newest first), reading the
        window slice by slice from its end. With compaction, enough rows for `need` runs + 1."""
        start, high = query.window.start, query.window.end
        span, out, seen = FIRST_SLICE_MS, [], set()
        cap = max(need * 4, 400) if query.compacts else need + 1
        while high >= start:
            low = max(start, high - span + 1)
            rows = self._slice(query, low, high, cap)
            for row in rows:
                if row["eventId"] not in seen:
                    seen.add(row["eventId"])
                    out.append(row)
            if query.compacts:
                if len(compact(out)) > need:
                    break
            elif len(out) >= need:
                break
            if len(rows) >= cap:  # more in this slice: continue below the oldest row read
                last = int(rows[-1]["at"])
                high = last if last < high else high - 1
                continue
            high, span = low - 1, span * SLICE_GROWTH
        return out

    def count(self, query: EventQuery) -> tuple[int, bool]:
        """(`total`, exact?) of matching events in the window, pins excluded. Exact (latest revision)
        up to EXACT_TOTAL_ROWS matching rows; above, rows minus later revisions (no decision filter)
        or uniqHLL12 of the matching rows (~1.6% error): an exact distinct count over a million rows
        costs more than the whole list."""
        sql = Sql()
        rows_where = " AND ".join(query.row_predicates(sql))
        latest = query.latest_predicates(sql)
        rough = " AND ".join([rows_where] + latest)
        # one pass: with decision filters the estimate is a sketch of the matching ids
        rows, later, estimate = self.store.query_rows(
            f"SELECT count(), countIf(decisionUpdatedAt > at), {'uniqHLL12(eventId)' if latest else '0'} "
            f"FROM {self.table} WHERE {rough}", sql.params)[0]
        rows, later = int(rows), int(later)
        if rows == 0:
            return 0, True
        if rows > EXACT_TOTAL_ROWS:
            if not latest:
                # a first revision is written with decisionUpdatedAt = at (column default; later
                # revisions — async results, L2/L3 — come after it), so rows minus later revisions
                # counts events without reading eventId; only a producer re-posting one event
                # twice is counted twice
                return rows - later, False
            return min(int(estimate), rows), False
        if not latest:
            exact = self.store.query_rows(
                f"SELECT uniqExact(cityHash64(eventId)) FROM {self.table} WHERE {rows_where}", sql.params)[0][0]
            return int(exact), True
        needed = [c for c in query.narrow_columns() if c not in ("eventId", "at", "decisionUpdatedAt")]
        columns = ", ".join(f"l_{c} AS {c}" for c in needed)
        aggregates = ", ".join(f"argMax({c}, decisionUpdatedAt) AS l_{c}" for c in needed)
        # only events with at least one matching row can match on their latest revision
        statement = (
            f"SELECT count() FROM (SELECT l_eventId AS eventId, {columns} FROM ("
            f"SELECT any(eventId) AS l_eventId, {aggregates} FROM {self.table} WHERE {rows_where} "
            f"AND cityHash64(eventId) IN (SELECT cityHash64(eventId) FROM {self.table} WHERE {rough}) "
            f"GROUP BY cityHash64(eventId))) WHERE {' AND '.join(latest)}"
        )
        return int(self.store.query_rows(statement, sql.params)[0][0]), True

    # -- §14.1 ----------------------------------------------------------------------------------

    def list_events(self, body: dict | None = None, *, query: EventQuery | None = None, with_total: bool = True) -> dict:
        query = self.resolve_asset(query or EventQuery.from_body(body))
        pinned = [list_item(row, self.overlay) for row in self.pinned_rows(query.pins)] if query.pins else []
        if query.pins and not query.has_filters:
            return {"items": pinned[: query.limit], "total": len(pinned), "updateTime": display_time(now_ms())}
        need = max(0, query.limit - len(pinned))
        items: list[dict] = []
        if need:
            rows = self.candidates(query, need)
            if query.latest_predicates(Sql()):
                # without decision filters a newer revision is always read first and older ones
                # are dropped as already seen; with them an older revision may match alone
                stale = self._stale(rows, query.window.end)
                rows = [row for row in rows if row["eventId"] not in stale]
            groups = compact(rows)[:need] if query.compacts else [[row] for row in rows[:need]]
            chosen = [group[-1] for group in groups]  # a run is shown as its first event
            full = self._rows_at(chosen)
            for group, row in zip(groups, chosen):
                stored = full.get(row["eventId"])
                if stored is None:
                    continue
                item = list_item(stored, self.overlay)
                if len(group) > 1:
                    item["repeatCount"] = len(group)
                    item["lastAt"] = display_time(int(group[0]["at"]))
                items.append(item)
        result = {"items": pinned[: query.limit] + items, "total": len(pinned), "updateTime": display_time(now_ms())}
        if with_total:
            total, exact = self.count(query)
            result["total"] = len(pinned) + max(total, len(items))
            if not exact:
                result["totalExact"] = False
        return result

    # -- §14.2 ----------------------------------------------------------------------------------

    def timeline(self, body: dict | None = None) -> dict:
        query = EventQuery.from_body(body, limits=TIMELINE_LIMIT)
        trace_id, run_id, session_id = "", "", ""
        pinned: list[dict] = []
        if query.pins:
            anchors = self.pinned_rows(query.pins[:1])
            if anchors:
                anchor = anchors[0]
                trace_id, run_id, session_id = anchor["traceId"], anchor["runId"], anchor["sessionId"]
                sql = Sql()
                chosen = self.store.query_dicts(
                    f"SELECT eventId, at, decisionUpdatedAt FROM {self.table} WHERE traceId = {sql.bind(trace_id, 'String')} "
                    f"{LATEST_BY} LIMIT {sql.bind(query.limit, 'UInt32')}", sql.params)
                rows = self._rows_at(chosen)
                pinned = [list_item(rows[row["eventId"]], self.overlay) for row in chosen if row["eventId"] in rows]
        items = pinned
        if not query.pins or query.has_filters:
            rest = self.list_events(query=replace(query, pins=()), with_total=False)["items"]
            known = {item["eventId"] for item in items}
            items = items + [item for item in rest if item["eventId"] not in known]
        items = items[: query.limit]
        items.sort(key=lambda item: (item["at"], item["decisionUpdatedAt"]))
        exact = dict(query.exact)
        if not trace_id:
            trace_id = exact.get("traceId") or _shared(items, "traceId")
            run_id = exact.get("runId") or _shared(items, "runId")
            session_id = exact.get("sessionId") or _shared(items, "sessionId")
        return {"traceId": trace_id, "runId": run_id, "sessionId": session_id, "items": items,
                "updateTime": display_time(now_ms())}

    # -- §28.2, §23.2 (SQL in `aggregates`) ----------------------------------------------------

    def stats(self, body: dict | None = None) -> dict:
        """Counts over every stored event (or the time filter when one is given), latest revisions."""
        from anysentry.store import aggregates

        return aggregates.stats(self, body if isinstance(body, dict) else {})

    def collector_stats_sync(self, window: TimeWindow) -> dict[str, dict]:
        """{collectorId: {eventCount, riskyEventCount, agentCount, workspaceCount, lastEventAt (ms), eventCategoryCounts}}."""
        from anysentry.store import aggregates

        return aggregates.collector_stats(self, window)

    # -- dashboard (§14.3) ----------------------------------------------------------------------

    def aggregate(self, name: str, body: dict | None = None, **extra) -> dict:
        from anysentry.store import aggregates

        return aggregates.AGGREGATES[name](self, body if isinstance(body, dict) else {}, **extra)

    # -- async twins ----------------------------------------------------------------------------

    async def alist_events(self, body: dict | None = None) -> dict:
        return await self.store.run(self.list_events, body)

    async def atimeline(self, body: dict | None = None) -> dict:
        return await self.store.run(self.timeline, body)

    async def astats(self, body: dict | None = None) -> dict:
        return await self.store.run(self.stats, body)

    async def collector_stats(self, window: TimeWindow) -> dict[str, dict]:
        return await self.store.run(self.collector_stats_sync, window)

    async def aaggregate(self, name: str, body: dict | None = None, **extra) -> dict:
        return await self.store.run(self.aggregate, name, body, **extra)


def _shared(items: list[dict], key: str) -> str:
    values = {item.get(key) for item in items}
    return values.pop() if len(values) == 1 else ""

