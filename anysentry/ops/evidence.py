"""Evidence bundles and their Markdown export (SPEC §26).

A bundle starts from one primary object (by the precedence of §26.1) and follows exact links outward:
ids stored on the objects themselves (incidentId, alertId, taskId, eventId, labels, delivery ids,
audit details), never a keyword search. The operational books are in memory, so their links cost
nothing; events are read from the store by exact ids and exact column filters only, each read bounded
by the time window and a LIMIT:

1. explicit event ids (bloom index on eventId),
2. the ordered ids of the linked-event filter (a trace, an incident's events, a scope), then the full
   rows of exactly those ids (`at IN … AND eventId IN …`: the sort key prunes to their granules),
3. one aggregate for the counts and risk categories, and one grouped read for agent context.

Everything leaving here passes a final value-redaction pass (§5): no secret reaches a bundle or export."""

from __future__ import annotations

import hashlib
import logging
import time

import orjson

from anysentry.events.ids import hash_id
from anysentry.events.redact import REDACTED, is_sensitive_key, redact_text
from anysentry.events.timefmt import display_time, iso_time, now_ms
from anysentry.judge.risk import TAXONOMY
from anysentry.ops.audit import AuditLog
from anysentry.ops.inventory import AGENT_CLASSES, SEVERITIES, SEVERITY_RANK, Inventory, event_item
from anysentry.ops.topology import KIND_EDGES, TARGET_SQL, Graph, graph_from_events, parse_edge_id, render
from anysentry.store.window import TimeWindow
from anysentry.ops.evidence_markdown import markdown
from anysentry.ops.fields import clamp as _clamp, text as _text

log = logging.getLogger("anysentry.ops.evidence")

SCHEMA = "anysentry.evidence_bundle.v1"
EXPORT_SCHEMA = "anysentry.evidence_export.v1"
SELECTORS = ("auditId", "edgeId", "eventId", "incidentId", "alertId", "taskId", "objectiveId", "issueId", "deliveryId",
             "windowId", "workspacePath", "agentId", "collectorId", "sourceId", "traceId", "runId", "sessionId")
SCOPE_KEYS = ("workspacePath", "agentId", "collectorId", "sourceId", "traceId", "runId", "sessionId")
PRECEDENCE = (("audit", "auditId"), ("topology", "edgeId"), ("notification", "deliveryId"), ("maintenance", "windowId"),
              ("objective", "objectiveId"), ("remediation", "taskId"), ("alert", "alertId"), ("incident", "incidentId"),
              ("event", "eventId"), ("coverage", "issueId"))
RISKY = ("block", "escalate")
FINAL_SQL = "decisionStatus IN ('succeeded', 'failed', 'timeout')"
SEVERITY_SQL = "multiIf(severity = 'critical', 4, severity = 'high', 3, severity = 'medium', 2, severity = 'low', 1, 0)"
MAX_LINKED = 500
NEAR_MS = 6 * 3_600_000
SMALL_LINKED = 5000
FINAL_STATUSES = ("succeeded", "failed", "timeout")
COVERAGE_CACHE_SECS = 30.0
EXPLICIT_EVENT_LIMIT = 100
EXPLICIT_FETCH = 20  # linked events read by id per bundle (a scope's own events are its evidence)


def _sev(value: object) -> int:
    return SEVERITY_RANK.get(str(value or ""), 0)


def scrub(value: object) -> object:
    """The final redaction pass over the serialized document (§5.1 on the JSON text).

    Run on the JSON text, the assignment rule also catches `"password":"…"` members (quoted keys
    are part of it), and a replacement never adds or removes a quote or backslash, so the text stays
    valid JSON. Everything in a bundle was redacted where it was made; this is the guarantee."""
    text = orjson.dumps(value).decode()
    cleaned = redact_text(text)
    if cleaned == text:
        return value
    try:
        return orjson.loads(cleaned)
    except orjson.JSONDecodeError:  # a bare number or boolean behind a secret-named key: go member by member
        return _scrub_tree(value)


def _scrub_tree(value: object, key: str = "") -> object:
    if isinstance(value, dict):
        return {k: _scrub_tree(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_tree(v) for v in value]
    if isinstance(value, str):
        return REDACTED if key and is_sensitive_key(key) else redact_text(value)
    if key and is_sensitive_key(key) and not isinstance(value, (dict, list)) and value is not None:
        return REDACTED
    return value


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


class Bundle:
    """What one bundle has collected so far: linked objects by id and asset keys."""

    def __init__(self):
        self.incidents: dict[str, dict] = {}
        self.alerts: dict[str, dict] = {}
        self.tasks: dict[str, dict] = {}
        self.objectives: dict[str, dict] = {}
        self.deliveries: dict[str, dict] = {}
        self.windows: dict[str, dict] = {}
        self.issue_ids: list[str] = []
        self.audits: dict[str, dict] = {}
        self.event_ids: list[str] = []
        self.agents: set[tuple[str, str]] = set()
        self.workspaces: set[str] = set()
        self.sources: set[str] = set()
        self.collectors: set[str] = set()

    def add_event_id(self, event_id: object) -> None:
        event_id = _text(event_id, 200)
        if event_id and event_id not in self.event_ids and len(self.event_ids) < EXPLICIT_EVENT_LIMIT:
            self.event_ids.append(event_id)

    def add_context(self, record: dict, source_key: str = "sourceId") -> None:
        workspace, agent = record.get("workspacePath") or "", record.get("agentId") or ""
        if agent:
            self.agents.add((workspace, agent))
        if workspace:
            self.workspaces.add(workspace)
        if record.get(source_key):
            self.sources.add(record[source_key])
        if record.get("collectorId"):
            self.collectors.add(record["collectorId"])


class Evidence:
    def __init__(self, engine):
        self.engine = engine
        self._coverage_cache: dict[str, tuple[float, dict]] = {}

    # ---- books ---------------------------------------------------------------------------------
    def _book(self, name: str):
        return getattr(self.engine, name, None)

    def _values(self, name: str) -> list[dict]:
        book = self._book(name)
        try:
            return list(book.values()) if book is not None else []
        except Exception:
            return []

    def _deliveries(self) -> list[dict]:
        notifier = self._book("notifications")
        book = getattr(notifier, "deliveries", None)
        return list(book.values()) if book is not None else []

    @property
    def inventory(self) -> Inventory | None:
        return self._book("inventory")

    @property
    def store(self):
        return getattr(self.engine, "store", None)

    # ---- query ---------------------------------------------------------------------------------
    @staticmethod
    def parse(body: dict) -> dict:
        body = body if isinstance(body, dict) else {}
        query = {k: _text(body.get(k), 4096 if k == "edgeId" else 1024) for k in SELECTORS}
        primary_type, primary_id = "scope", ""
        for kind, key in PRECEDENCE:
            if query[key]:
                primary_type, primary_id = kind, query[key]
                break
        query["primaryType"], query["primaryId"] = primary_type, primary_id
        query["limit"] = _clamp(body.get("limit"), 10, 100, 60)
        return query

    @staticmethod
    def bundle_id(query: dict) -> str:
        return hash_id("evb", [query["primaryType"], query["primaryId"] or None, *[query[k] or None for k in SELECTORS]])

    # ---- event reads ---------------------------------------------------------------------------
    async def _q(self, sql: str, params: dict) -> list[dict]:
        store = self.store
        if store is None:
            return []
        try:
            return await store.aquery_dicts(sql, params)
        except Exception as exc:
            log.warning("evidence event read failed: %s", exc)
            return []

    async def _rows_by_ids(self, ids: list[str]) -> dict[str, dict]:
        """Latest revision of explicitly linked events, across the retention period (bloom index)."""
        if not ids or self.store is None:
            return {}
        rows = await self._q(f"SELECT * FROM {self.store.events_table} WHERE eventId IN {{ids:Array(String)}} "
                             f"ORDER BY decisionUpdatedAt DESC LIMIT 1 BY eventId LIMIT {len(ids)}", {"ids": ids})
        return {r["eventId"]: r for r in rows}

    async def _ids(self, flt: Filter, window: TimeWindow, n: int, anchor: int | None = None) -> list[tuple[str, int]]:
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

    async def _rows_at(self, pairs: list[tuple[str, int]]) -> dict[str, dict]:
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

    async def _linked(self, flt: Filter, window: TimeWindow, n: int, anchor: int | None,
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
        pairs = await self._ids(flt, window, n, anchor)
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

    # ---- coverage ------------------------------------------------------------------------------
    async def _coverage_issues(self, window: TimeWindow, now: int) -> dict[str, dict]:
        """Current coverage issues by id (the coverage default window), cached briefly: a bundle is a read."""
        coverage = self._book("coverage")
        if coverage is None:
            return {}
        key = window.time_type
        cached = self._coverage_cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < COVERAGE_CACHE_SECS:
            return cached[1]
        try:
            snap = await coverage.compute(window, now=now)
            issues = {i["issueId"]: i for i in snap.issues}
        except Exception as exc:
            log.warning("coverage unavailable for evidence: %s", exc)
            issues = {}
        self._coverage_cache[key] = (time.monotonic(), issues)
        return issues

    async def _issues(self, ids: list[str], window: TimeWindow, now: int) -> list[dict]:
        if not ids:
            return []
        # coverage is a statement about now: the issues of the coverage default window (cached briefly)
        found = await self._coverage_issues(TimeWindow.from_body({}, now=now), now)
        return [found[i] for i in ids if i in found]

    # ---- link closure --------------------------------------------------------------------------
    def _close(self, b: Bundle, issue_ids: list[str]) -> None:
        """Follow exact links between incidents, alerts, tasks, objectives, issues and deliveries
        (a breadth-first walk over reverse indexes of the books, bounded by MAX_LINKED each)."""
        incidents, objectives = self._book("incidents"), self._book("objectives")
        alerts_by: dict[tuple[str, str], list[dict]] = {}
        tasks_by: dict[tuple[str, str], list[dict]] = {}
        alerts_by_id: dict[str, dict] = {}
        tasks_by_id: dict[str, dict] = {}
        for alert in self._values("alerts"):
            labels = alert.get("labels") or {}
            alerts_by_id[alert["alertId"]] = alert
            keys = {("incident", alert.get("incidentId") or labels.get("incidentId") or ""),
                    ("task", labels.get("taskId") or ""), ("objective", labels.get("objectiveId") or ""),
                    ("issue", labels.get("issueId") or "")}
            if alert.get("ruleId") != "coverage.issue":
                keys |= {("event", alert.get("eventId") or ""), ("event", labels.get("eventId") or "")}
            for key in keys:
                if key[1]:
                    alerts_by.setdefault(key, []).append(alert)
        for task in self._values("remediation"):
            labels = task.get("labels") or {}
            tasks_by_id[task["taskId"]] = task
            origin = {"incident": "incident", "alert": "alert", "coverage": "issue"}.get(task.get("sourceType") or "")
            for key in {("incident", task.get("incidentId") or ""), ("alert", task.get("alertId") or ""),
                        ("objective", labels.get("objectiveId") or ""), ("issue", labels.get("issueId") or ""),
                        (origin or "", task.get("sourceId") or "" if origin else "")}:
                if key[0] and key[1]:
                    tasks_by.setdefault(key, []).append(task)
        queue: list[tuple[str, str]] = [("incident", i) for i in b.incidents] + [("alert", a) for a in b.alerts]
        queue += [("task", t) for t in b.tasks] + [("objective", o) for o in b.objectives]
        queue += [("issue", i) for i in b.issue_ids] + [("event", e) for e in b.event_ids]
        done: set[tuple[str, str]] = set()
        while queue:
            key = queue.pop()
            if key in done:
                continue
            done.add(key)
            for alert in alerts_by.get(key, ()):
                if alert["alertId"] not in b.alerts and len(b.alerts) < MAX_LINKED:
                    b.alerts[alert["alertId"]] = alert
                    queue.append(("alert", alert["alertId"]))
            for task in tasks_by.get(key, ()):
                if task["taskId"] not in b.tasks and len(b.tasks) < MAX_LINKED:
                    b.tasks[task["taskId"]] = task
                    queue.append(("task", task["taskId"]))
            kind, value = key
            record = alerts_by_id.get(value) if kind == "alert" else tasks_by_id.get(value) if kind == "task" else None
            if record is None:
                continue
            labels = record.get("labels") or {}
            inc = record.get("incidentId") or labels.get("incidentId")
            if inc and inc not in b.incidents and incidents is not None and incidents.get(inc) is not None:
                b.incidents[inc] = incidents.get(inc)
                queue.append(("incident", inc))
            obj = labels.get("objectiveId")
            if obj and obj not in b.objectives and objectives is not None and objectives.get(obj) is not None:
                b.objectives[obj] = objectives.get(obj)
                queue.append(("objective", obj))
            issue = labels.get("issueId") or (record.get("sourceId") if record.get("sourceType") == "coverage" else "")
            if issue and issue not in b.issue_ids:
                b.issue_ids.append(issue)
                queue.append(("issue", issue))
            linked_task = labels.get("taskId")
            if linked_task and linked_task not in b.tasks and linked_task in tasks_by_id:
                b.tasks[linked_task] = tasks_by_id[linked_task]
                queue.append(("task", linked_task))
            linked_alert = record.get("alertId") if kind == "task" else None
            if linked_alert and linked_alert not in b.alerts and linked_alert in alerts_by_id:
                b.alerts[linked_alert] = alerts_by_id[linked_alert]
                queue.append(("alert", linked_alert))
        for record in [*b.incidents.values(), *b.alerts.values(), *b.tasks.values()]:
            labels = record.get("labels") or {}
            for value in (record.get("lastEventId"), record.get("firstEventId"), record.get("eventId"), labels.get("eventId")):
                b.add_event_id(value)
            b.add_context(record, "ingestionSourceId" if "taskId" in record else "sourceId")
        wanted = {"alertId": set(b.alerts), "incidentId": set(b.incidents), "taskId": set(b.tasks),
                  "objectiveId": set(b.objectives), "issueId": set(b.issue_ids)}
        for delivery in self._deliveries():
            if len(b.deliveries) >= MAX_LINKED:
                break
            if any(delivery.get(k) and delivery.get(k) in ids for k, ids in wanted.items()):
                b.deliveries[delivery["deliveryId"]] = delivery

    def _audits(self, b: Bundle, extra_ids: set[str]) -> None:
        audit = getattr(self.engine, "audit", None)
        if audit is None:
            return
        ids = (set(b.incidents) | set(b.alerts) | set(b.tasks) | set(b.objectives) | set(b.deliveries) | set(b.windows)
               | set(b.issue_ids) | set(b.sources) | extra_ids) - {""}
        agents = {a for _, a in b.agents}
        for record in audit.records:
            if len(b.audits) >= MAX_LINKED:
                break
            details = record.get("details") if isinstance(record.get("details"), dict) else {}
            if record.get("resourceId") in ids or (record.get("resourceType") == "agent" and record.get("resourceId") in agents
                                                   and (not details.get("workspacePath")
                                                        or details.get("workspacePath") in b.workspaces)):
                b.audits[record["auditId"]] = record
                continue
            for key in ("incidentId", "alertId", "taskId", "objectiveId", "issueId", "deliveryId", "windowId", "eventId"):
                value = details.get(key)
                if isinstance(value, str) and value and (value in ids or value in b.event_ids):
                    b.audits[record["auditId"]] = record
                    break

    def _windows(self, b: Bundle, now: int) -> None:
        """Maintenance windows that exactly target an asset of the bundle."""
        maintenance = self._book("maintenance")
        if maintenance is None:
            return
        for window in maintenance.values():
            kind, target = window.get("targetType"), window.get("targetId") or ""
            hit = ((kind == "workspace" and target in b.workspaces)
                   or (kind == "collector" and target in b.collectors)
                   or (kind == "source" and target in b.sources)
                   or (kind == "agent" and any(target in (agent, f"{ws}:{agent}") for ws, agent in b.agents)))
            if hit:
                b.windows[window["windowId"]] = window

    # ---- primaries -----------------------------------------------------------------------------
    def _scope_match(self, record: dict, scope: dict, source_key: str = "sourceId") -> bool:
        for key, value in scope.items():
            have = record.get(source_key if key == "sourceId" else key) or ""
            if have != value:
                return False
        return True

    async def build(self, body: dict, *, now: int | None = None) -> dict:
        now = now or now_ms()
        query = self.parse(body)
        window = TimeWindow.from_body({**(body if isinstance(body, dict) else {}),
                                       "timeType": (body or {}).get("timeType") or "last_30d"}, default="last_30d", now=now)
        query["timeType"] = window.time_type
        limit = query["limit"]
        kind, pid = query["primaryType"], query["primaryId"]
        scope = {k: query[k] for k in SCOPE_KEYS if query[k]}
        b = Bundle()
        primary: dict = {}
        flt = Filter()
        anchor: int | None = None
        timeline_flt: Filter | None = None
        explicit: dict[str, dict] = {}
        issues: list[dict] = []
        topology: dict | None = None
        extra_ids: set[str] = set()
        channels: dict[str, dict] = {}
        routes: dict[str, dict] = {}
        meta_workspace = ""

        def trace_of(record: dict) -> Filter | None:
            return Filter(traceId=record["traceId"]) if record.get("traceId") else None

        if kind == "event":
            explicit = await self._rows_by_ids([pid])
            event = explicit.get(pid)
            if event is not None:
                primary["event"] = event
                anchor = int(event["at"])
                flt = Filter(traceId=event["traceId"]) if event.get("traceId") else Filter(sessionId=event.get("sessionId", ""))
                b.add_event_id(pid)
                b.add_context(event)
                risky = event.get("verdict") in RISKY
                inc_id = hash_id("inc", [event["workspacePath"], event["agentId"], event["sessionId"], event["traceId"],
                                         event["runId"], event["riskCategory"]])
                incidents = self._book("incidents")
                for record in (incidents.values() if incidents is not None else []):
                    if (risky and record["incidentId"] == inc_id) or pid in (record.get("lastEventId"), record.get("firstEventId")):
                        b.incidents[record["incidentId"]] = record
                for alert in self._values("alerts"):
                    if pid in (alert.get("eventId"), (alert.get("labels") or {}).get("eventId")):
                        b.alerts[alert["alertId"]] = alert
                for task in self._values("remediation"):
                    if task.get("eventId") == pid:
                        b.tasks[task["taskId"]] = task
        elif kind == "incident":
            record = self._book("incidents").get(pid) if self._book("incidents") is not None else None
            if record is not None:
                primary["incident"] = record
                b.incidents[pid] = record
                flt = incident_events(record)
                anchor = record.get("lastEventAt")
                timeline_flt = trace_of(record)
        elif kind == "alert":
            record = self._book("alerts").get(pid) if self._book("alerts") is not None else None
            if record is not None:
                primary["alert"] = record
                b.alerts[pid] = record
                incident = self._book("incidents").get(record.get("incidentId") or "") if self._book("incidents") is not None else None
                if record.get("ruleId") == "event.critical_block":
                    flt = Filter(workspacePath=record.get("workspacePath", ""), agentId=record.get("agentId", ""),
                                 traceId=record.get("traceId", ""), riskCategory=record.get("riskCategory", ""))
                    flt.raw("verdict = 'block'")
                elif incident is not None:
                    flt = incident_events(incident)
                    anchor = incident.get("lastEventAt")
                timeline_flt = trace_of(record)
        elif kind == "remediation":
            record = self._book("remediation").get(pid) if self._book("remediation") is not None else None
            if record is not None:
                primary["remediation"] = record
                b.tasks[pid] = record
                timeline_flt = trace_of(record)
        elif kind == "objective":
            record = self._book("objectives").get(pid) if self._book("objectives") is not None else None
            if record is not None:
                primary["objective"] = record
                b.objectives[pid] = record
                self._objective_target(b, record)
        elif kind == "coverage":
            b.issue_ids.append(pid)
        elif kind == "notification":
            for delivery in self._deliveries():
                if delivery.get("deliveryId") == pid:
                    primary["notificationDelivery"] = delivery
                    b.deliveries[pid] = delivery
                    alert = self._book("alerts").get(delivery.get("alertId") or "") if self._book("alerts") is not None else None
                    if alert is not None:
                        b.alerts[alert["alertId"]] = alert
                    for key, book in (("incidentId", "incidents"), ("taskId", "remediation"), ("objectiveId", "objectives")):
                        found = self._book(book).get(delivery.get(key) or "") if self._book(book) is not None else None
                        if found is not None:
                            {"incidents": b.incidents, "remediation": b.tasks, "objectives": b.objectives}[book][delivery[key]] = found
                    if delivery.get("issueId"):
                        b.issue_ids.append(delivery["issueId"])
                    b.add_event_id(delivery.get("eventId"))
                    b.add_context(delivery)
                    self._channel_history(delivery, b, channels, routes)
                    break
        elif kind == "maintenance":
            maintenance = self._book("maintenance")
            window_rec = maintenance.get(pid) if maintenance is not None else None
            if window_rec is not None:
                primary["maintenanceWindow"] = window_rec
                b.windows[pid] = window_rec
                self._maintenance_context(b, window_rec, now)
        elif kind == "audit":
            audit = getattr(self.engine, "audit", None)
            record = next((r for r in (audit.records if audit is not None else []) if r.get("auditId") == pid), None)
            if record is not None:
                primary["audit"] = record
                b.audits[pid] = record
                extra_ids |= self._audit_links(b, record)
        elif kind == "topology":
            parsed = parse_edge_id(pid)
            topo = self._book("topology")
            if parsed is not None and topo is not None:
                graph = Graph()
                edges = await topo.pinned_edges(graph, pid, "", now, window)
                if edges:
                    topology = render(graph, edges)
                    edge = topology["edges"][0]
                    primary["topologyEdge"] = edge
                    b.add_event_id(edge.get("sampleEventId"))
                    b.agents.add((parsed["workspacePath"], parsed["agentId"]))
                    b.workspaces.add(parsed["workspacePath"])
                    if parsed.get("collectorId"):
                        b.collectors.add(parsed["collectorId"])
                    flt = Filter(workspacePath=parsed["workspacePath"], agentId=parsed["agentId"])
                    if parsed.get("collectorId"):
                        flt.eq("collectorId", parsed["collectorId"])
                    if parsed.get("targetValue") is not None:
                        kinds = [k for k, spec in KIND_EDGES.items() if spec[1] == parsed["type"]]
                        flt.raw("eventKind IN {kinds:Array(String)}", kinds=kinds)
                        flt.raw(f"{TARGET_SQL} = {{target:String}}", target=parsed["targetValue"])
        if kind == "scope":
            flt = Filter(**scope)
            meta_workspace = self._scope_objects(b, scope)
            if scope.get("traceId") or scope.get("runId") or scope.get("sessionId"):
                timeline_flt = Filter(**{k: scope[k] for k in ("traceId", "runId", "sessionId") if scope.get(k)})

        # exact links between the operational objects, then the events they name
        self._close(b, b.issue_ids)
        missing = [e for e in b.event_ids if e not in explicit][:EXPLICIT_FETCH] if kind != "scope" else []
        known: dict[str, int] = {}
        for incident in b.incidents.values():  # incidents know when their first and last events happened
            for key, at in (("lastEventId", "lastEventAt"), ("firstEventId", "firstEventAt")):
                if incident.get(key) and isinstance(incident.get(at), int):
                    known[incident[key]] = incident[at]
        if missing:
            explicit.update(await self._rows_at([(e, known[e]) for e in missing if e in known]))
            unknown = [e for e in missing if e not in explicit]
            if unknown:
                explicit.update(await self._rows_by_ids(unknown))
        if timeline_flt is None and kind in ("remediation", "notification", "audit", "coverage", "objective") and explicit:
            first = explicit.get(b.event_ids[0]) if b.event_ids else None
            if first is not None and first.get("traceId"):
                timeline_flt, anchor = Filter(traceId=first["traceId"]), int(first["at"])
        if anchor is None and timeline_flt is not None and b.event_ids and b.event_ids[0] in explicit:
            anchor = int(explicit[b.event_ids[0]]["at"])

        around = _around(window, anchor) if anchor else window
        small = kind in ("event", "incident", "alert") or bool(scope.keys() & {"traceId", "runId", "sessionId"})
        pairs, count, categories, rank = await self._linked(flt, around, limit, anchor, small)
        timeline_pairs: list[tuple[str, int]] = []
        if timeline_flt is not None and kind != "event":
            timeline_pairs = await self._ids(timeline_flt, around, limit, anchor)
        fetched = await self._rows_at([p for p in pairs + timeline_pairs if p[0] not in explicit])
        rows = {**fetched, **explicit}

        linked = [rows[e] for e, _ in pairs if e in rows]
        extras = [row for e, row in explicit.items() if e not in {p[0] for p in pairs}]
        event_rows = sorted({r["eventId"]: r for r in extras + linked}.values(), key=lambda r: -int(r["at"]))
        if kind == "event" and pid in rows:
            event_rows = [rows[pid]] + [r for r in event_rows if r["eventId"] != pid]
        extra_count = sum(1 for r in extras if not (flt and flt.matches(r) and around.start <= int(r["at"]) <= around.end))
        for row in extras:
            if not (flt and flt.matches(row)) and row.get("riskCategory") not in ("", "benign"):
                entry = next((c for c in categories if c["riskCategory"] == row["riskCategory"]), None)
                if entry is None:
                    categories.append({"riskCategory": row["riskCategory"], "riskName": row.get("riskName") or "",
                                       "eventCount": 1})
                else:
                    entry["eventCount"] += 1
            rank = max(rank, _sev(row.get("severity")))
        event_count = max(count + extra_count, len(event_rows))
        inventory = self.inventory
        events = [event_item(r, inventory) for r in event_rows[:limit]]
        if "event" in primary:
            primary["event"] = events[0] if events and events[0]["eventId"] == pid else event_item(primary["event"], inventory)
        if kind == "event":
            timeline_source = [rows[e] for e, _ in pairs if e in rows]
        else:
            timeline_source = [rows[e] for e, _ in timeline_pairs if e in rows]
        timeline_rows = sorted(timeline_source, key=lambda r: (int(r["at"]), r["eventId"]))
        anchor_row = rows.get(pid) if kind == "event" else (timeline_rows[-1] if timeline_rows else None)
        timeline = {"traceId": (anchor_row or {}).get("traceId", ""), "runId": (anchor_row or {}).get("runId", ""),
                    "sessionId": (anchor_row or {}).get("sessionId", ""),
                    "items": [event_item(r, inventory) for r in timeline_rows], "updateTime": display_time(now)}
        for row in event_rows[:limit]:
            b.add_context(row)

        # coverage issues named by exact id
        if b.issue_ids:
            issues = await self._issues(b.issue_ids[:MAX_LINKED], window, now)
            if kind == "coverage" and issues:
                primary["coverageIssue"] = issues[0]
            for issue in issues:
                b.add_event_id(issue.get("evidenceEventId"))
                if issue.get("workspacePath"):
                    b.workspaces.add(issue["workspacePath"])
                if issue.get("agentId"):
                    b.agents.add((issue.get("workspacePath") or "", issue["agentId"]))
                if issue.get("sourceId"):
                    b.sources.add(issue["sourceId"])
                if issue.get("collectorId"):
                    b.collectors.add(issue["collectorId"])
                maintenance = self._book("maintenance")
                if issue.get("maintenanceWindowId") and maintenance is not None and maintenance.get(issue["maintenanceWindowId"]):
                    b.windows[issue["maintenanceWindowId"]] = maintenance.get(issue["maintenanceWindowId"])
            if kind == "coverage" and issues and issues[0].get("evidenceEventId") and not events:
                more = await self._rows_by_ids([issues[0]["evidenceEventId"]])
                events = [event_item(r, inventory) for r in more.values()]
                event_count = max(event_count, len(events))
                for row in more.values():
                    rank = max(rank, _sev(row.get("severity")))

        # asset context
        last_seen: dict[tuple[str, str], int] = {}
        for row in rows.values():
            key = (row.get("workspacePath", ""), row.get("agentId", ""))
            last_seen[key] = max(last_seen.get(key, 0), int(row["at"]))
        agents, workspaces = await self._assets(b, kind, scope, window, now, meta_workspace, last_seen)
        self._windows(b, now)
        self._audits(b, extra_ids | {e["eventId"] for e in events} | {a for _, a in b.agents})
        if topology is None:
            topology = graph_from_events(events)
        sources = [self.engine.sources.item(s, now) for s in (self.engine.sources.get(i) for i in sorted(b.sources)) if s]
        collectors = self._collector_items(b, window, now)
        bundle = self._assemble(query, now, primary, b, events, event_count, categories, rank, timeline, issues,
                                topology, agents, workspaces, sources, collectors, channels, routes, limit)
        return scrub(bundle)

    # ---- per-type context ----------------------------------------------------------------------
    def _objective_target(self, b: Bundle, record: dict) -> None:
        kind, target = record.get("targetType"), record.get("targetId") or ""
        if kind == "workspace" and target:
            b.workspaces.add(target)
        elif kind == "agent" and target:
            ws, sep, agent = target.rpartition(":")
            if sep and ws:
                b.agents.add((ws, agent))
                b.workspaces.add(ws)
        elif kind == "collector" and target:
            b.collectors.add(target)
        elif kind == "source" and target:
            b.sources.add(target)

    def _maintenance_context(self, b: Bundle, window: dict, now: int) -> None:
        kind, target = window.get("targetType"), window.get("targetId") or ""
        if kind == "workspace" and target:
            b.workspaces.add(target)
        elif kind == "agent" and target:
            ws, sep, agent = target.rpartition(":")
            if sep and ws:
                b.agents.add((ws, agent))
                b.workspaces.add(ws)
            else:
                for meta in self._values_of_inventory():
                    if meta.get("agentId") == target:
                        b.agents.add((meta.get("workspacePath", ""), target))
        elif kind == "collector" and target:
            b.collectors.add(target)
        elif kind == "source" and target:
            b.sources.add(target)
        try:
            from anysentry.ops.maintenance import SUPPRESSED_NOTE, target_matches
        except ImportError:
            return
        keys = set(window.get("suppressedKeys") or [])
        for alert in self._values("alerts"):
            if len(b.alerts) >= MAX_LINKED:
                break
            if alert.get("dedupeKey") in keys or (alert.get("note") == SUPPRESSED_NOTE
                                                 and target_matches(kind or "all", target, alert)):
                b.alerts[alert["alertId"]] = alert

    def _values_of_inventory(self) -> list[dict]:
        inventory = self.inventory
        return inventory.metadata.values() if inventory is not None else []

    def _audit_links(self, b: Bundle, record: dict) -> set[str]:
        """An audit record's resource and the exact ids in its details."""
        ids: set[str] = set()
        details = record.get("details") if isinstance(record.get("details"), dict) else {}
        rtype, rid = record.get("resourceType"), record.get("resourceId") or ""
        refs = {"incidentId": details.get("incidentId"), "alertId": details.get("alertId"), "taskId": details.get("taskId"),
                "objectiveId": details.get("objectiveId"), "windowId": details.get("windowId"),
                "deliveryId": details.get("deliveryId"), "sourceId": details.get("sourceId"),
                "eventId": details.get("eventId"), "issueId": details.get("issueId")}
        by_type = {"incident": "incidentId", "alert": "alertId", "remediation": "taskId", "objective": "objectiveId",
                   "maintenance": "windowId", "source": "sourceId", "event": "eventId"}
        if rtype in by_type and not refs.get(by_type[rtype]):
            refs[by_type[rtype]] = rid
        if rtype == "notification":
            if rid.startswith("ndl_"):
                refs["deliveryId"] = refs.get("deliveryId") or rid
            ids.add(rid)
        for key, book, target in (("incidentId", "incidents", b.incidents), ("alertId", "alerts", b.alerts),
                                  ("taskId", "remediation", b.tasks), ("objectiveId", "objectives", b.objectives),
                                  ("windowId", "maintenance", b.windows)):
            value = refs.get(key)
            store = self._book(book)
            if isinstance(value, str) and value and store is not None and store.get(value) is not None:
                target[value] = store.get(value)
        if isinstance(refs.get("deliveryId"), str) and refs["deliveryId"]:
            for delivery in self._deliveries():
                if delivery.get("deliveryId") == refs["deliveryId"]:
                    b.deliveries[delivery["deliveryId"]] = delivery
        if isinstance(refs.get("issueId"), str) and refs["issueId"]:
            b.issue_ids.append(refs["issueId"])
        if isinstance(refs.get("sourceId"), str) and refs["sourceId"]:
            b.sources.add(refs["sourceId"])
        b.add_event_id(refs.get("eventId") if isinstance(refs.get("eventId"), str) else "")
        if rtype == "agent" and rid:
            workspace = details.get("workspacePath") if isinstance(details.get("workspacePath"), str) else ""
            b.agents.add((workspace, rid))
            if workspace:
                b.workspaces.add(workspace)
        for key in ("workspacePath", "agentId", "collectorId"):
            value = details.get(key)
            if isinstance(value, str) and value:
                if key == "workspacePath":
                    b.workspaces.add(value)
                elif key == "collectorId":
                    b.collectors.add(value)
        ids |= {v for v in refs.values() if isinstance(v, str) and v}
        return ids

    def _channel_history(self, delivery: dict, b: Bundle, channels: dict, routes: dict) -> None:
        notifier = self._book("notifications")
        if notifier is None:
            return
        channel = notifier.channel(delivery.get("channelId") or "") if hasattr(notifier, "channel") else None
        if channel is not None:
            channels[channel["channelId"]] = notifier.channel_item(channel)
        route = notifier.routes.get(delivery.get("routeId") or "") if delivery.get("routeId") else None
        if route is not None:
            routes[route["routeId"]] = notifier.route_item(route)
        history = [d for d in self._deliveries() if d.get("alertId") == delivery.get("alertId")
                   or (d.get("channelId") == delivery.get("channelId") and d.get("routeId") == delivery.get("routeId"))]
        history.sort(key=lambda d: -(d.get("sentAt") or 0))
        for entry in history[:50]:
            b.deliveries[entry["deliveryId"]] = entry

    def _scope_objects(self, b: Bundle, scope: dict) -> str:
        """Incidents, alerts, tasks and deliveries whose exact context is the scope. Returns the
        workspace of a unique metadata-only agent (§26.1), if that is what the scope names."""
        if not scope:
            return ""
        for record in self._values("incidents"):
            if self._scope_match(record, scope) and len(b.incidents) < MAX_LINKED:
                b.incidents[record["incidentId"]] = record
        for record in self._values("alerts"):
            if self._scope_match(record, scope) and len(b.alerts) < MAX_LINKED:
                b.alerts[record["alertId"]] = record
        for record in self._values("remediation"):
            if self._scope_match(record, scope, "ingestionSourceId") and len(b.tasks) < MAX_LINKED:
                b.tasks[record["taskId"]] = record
        alert_scope = {k: v for k, v in scope.items() if k in ("workspacePath", "agentId", "collectorId", "sourceId")}
        if alert_scope and alert_scope == scope:
            for delivery in self._deliveries():
                if self._scope_match(delivery, alert_scope) and len(b.deliveries) < MAX_LINKED:
                    b.deliveries[delivery["deliveryId"]] = delivery
        if scope.get("workspacePath"):
            b.workspaces.add(scope["workspacePath"])
        if scope.get("collectorId"):
            b.collectors.add(scope["collectorId"])
        if scope.get("sourceId"):
            b.sources.add(scope["sourceId"])
            source = self.engine.sources.get(scope["sourceId"])
            if source:
                if source.get("collectorId"):
                    b.collectors.add(source["collectorId"])
                if source.get("workspacePath"):
                    b.workspaces.add(source["workspacePath"])
        # sources bound to the scoped collector or workspace bring in the other side of the binding
        for field, other, into in (("collectorId", "workspacePath", b.workspaces), ("workspacePath", "collectorId", b.collectors)):
            if scope.get(field):
                for source in self.engine.sources.all():
                    if source.get(field) == scope[field]:
                        b.sources.add(source["sourceId"])
                        if source.get(other):
                            into.add(source[other])
        if scope.get("agentId"):
            metas = [m for m in self._values_of_inventory() if m.get("agentId") == scope["agentId"]
                     and (not scope.get("workspacePath") or m.get("workspacePath") == scope["workspacePath"])]
            if len(metas) == 1:
                return metas[0].get("workspacePath", "")
        return ""

    async def _assets(self, b: Bundle, kind: str, scope: dict, window: TimeWindow, now: int,
                      meta_workspace: str, last_seen: dict[tuple[str, str], int]) -> tuple[list[dict], list[dict]]:
        """Agent and workspace items (inventory shapes) for the bundle's exact assets."""
        inventory = self.inventory
        if inventory is None:
            return [], []
        if meta_workspace:
            b.workspaces.add(meta_workspace)
            b.agents.add((meta_workspace, scope.get("agentId", "")))
        filters: dict = {}
        if kind == "scope" and scope.get("collectorId") and not scope.get("workspacePath"):
            filters = {"collector": scope["collectorId"], "agents": [scope["agentId"]] if scope.get("agentId") else None}
        elif kind == "scope" and scope.get("sourceId") and not scope.get("workspacePath"):
            filters = {"source": scope["sourceId"], "agents": [scope["agentId"]] if scope.get("agentId") else None}
        elif kind == "scope" and scope.get("agentId") and not scope.get("workspacePath"):
            filters = {"agents": [scope["agentId"]]}
        # the inventory's own view of each asset (its default window, `statsWindow`); an asset quiet in
        # it is read over the same span ending at its last event in this bundle, restricted to it
        recent = TimeWindow.from_body({}, now=now)
        rows: list[dict] = []
        if filters:
            rows = await inventory.assets(recent, now, **filters)
        else:
            spaces = sorted(set(b.workspaces) | {ws for ws, _ in b.agents if ws})
            homeless = sorted({agent for ws, agent in b.agents if not ws})
            if spaces:
                rows = await inventory.assets(recent, now, workspaces=spaces)
            if homeless:
                rows += await inventory.assets(recent, now, agents=homeless)
        stats_window = {"startTime": display_time(recent.start), "endTime": display_time(recent.end)}
        for row in rows:
            row["statsWindow"] = stats_window
        have = {(r["workspacePath"], r["agentId"]) for r in rows}
        quiet = [(key, last_seen[key]) for key in b.agents if key not in have and last_seen.get(key)]
        if quiet:
            end = max(at for _, at in quiet)
            span = TimeWindow(max(window.start, min(at for _, at in quiet) - recent.span), end, "custom")
            older = await inventory.assets(span, now, agents=sorted({k[1] for k, _ in quiet}),
                                           workspaces=sorted({k[0] for k, _ in quiet}))
            for row in older:
                key = (row["workspacePath"], row["agentId"])
                if key not in have and key in dict(quiet):
                    row["statsWindow"] = {"startTime": display_time(max(span.start, dict(quiet)[key] - recent.span)),
                                          "endTime": display_time(dict(quiet)[key])}
                    rows.append(row)
        by_key = {(r["workspacePath"], r["agentId"]): r for r in rows}
        visible = {k for k, r in by_key.items() if r.get("metadataOnly") or r["classification"] in AGENT_CLASSES}
        wanted: set[tuple[str, str]] = set(b.agents)
        if kind == "scope" and filters:
            wanted |= visible
        if kind == "scope" and scope.get("workspacePath") and not scope.get("agentId"):
            wanted |= {k for k in visible if k[0] == scope["workspacePath"]}
        opened = inventory._open_incidents()
        agents: list[dict] = []
        for key in sorted(wanted):
            item = by_key.get(key)
            if item is None:
                candidates = [r for k, r in by_key.items() if k[1] == key[1] and not key[0]]
                item = candidates[0] if len(candidates) == 1 else None
            if item is None:
                meta = inventory.metadata_for(*key)
                if meta is None and not key[0]:
                    metas = [m for m in inventory.metadata.values() if m.get("agentId") == key[1]]
                    meta = metas[0] if len(metas) == 1 else None
                if meta is None:
                    continue
                item = inventory.asset(None, meta, opened.get(key, 0), now)
            if item["workspacePath"]:
                b.workspaces.add(item["workspacePath"])
            for cid in item.get("collectorIds", []):
                b.collectors.add(cid)
            for sid in item.get("sourceIds", []):
                b.sources.add(sid)
            if all(a["agentAssetId"] != item["agentAssetId"] or a["workspacePath"] != item["workspacePath"] for a in agents):
                agents.append(item)
        b.agents |= {(a["workspacePath"], a["agentId"]) for a in agents}
        workspace_items = []
        for ws in sorted(b.workspaces):
            members = [r for k, r in by_key.items() if k[0] == ws and k in visible]
            members += [a for a in agents if a["workspacePath"] == ws and (ws, a["agentId"]) not in by_key]
            if members:
                workspace_items.append(inventory.workspace_item(ws, members, now))
            else:
                workspace_items.append(inventory.workspace_item(ws, [], now) | {"agentCount": 0})
        return [inventory.public(a) for a in agents], [inventory.public(w) for w in workspace_items]

    def _collector_items(self, b: Bundle, window: TimeWindow, now: int) -> list[dict]:
        registry = self.engine.collectors
        if not b.collectors:
            return []
        counts = registry.window_counts(window.start, window.end)
        items = []
        for cid in sorted(b.collectors):
            hb = registry.latest.get(cid)
            if hb is None:
                items.append({"collectorId": cid, "state": "missing", "stateText": "No heartbeat"})
                continue
            items.append(registry.item(hb, now, counts.get(cid, {}), None, window.span / 60_000))
        return items

    # ---- assembly ------------------------------------------------------------------------------
    def _item(self, book_name: str, record: dict, now: int) -> dict:
        book = self._book(book_name)
        item = getattr(book, "item", None)
        try:
            if book_name in ("remediation", "maintenance"):
                return item(record, now)
            return item(record)
        except Exception:
            out = {k: v for k, v in record.items() if not k.startswith("_")}
            for key, value in list(out.items()):
                if key.endswith("At") and isinstance(value, int) and value > 10**11:
                    out[key] = display_time(value)
            return out

    def _assemble(self, query: dict, now: int, primary: dict, b: Bundle, events: list[dict], event_count: int,
                  categories: list[dict], rank: int, timeline: dict, issues: list[dict], topology: dict,
                  agents: list[dict], workspaces: list[dict], sources: list[dict], collectors: list[dict],
                  channels: dict, routes: dict, limit: int) -> dict:
        from anysentry.ops.coverage import public_issue

        kind = query["primaryType"]
        incidents = sorted(b.incidents.values(), key=lambda r: (-_sev(r.get("severity")), -(r.get("lastEventAt") or 0)))
        alerts = sorted(b.alerts.values(), key=lambda r: (r.get("status") == "resolved", -_sev(r.get("severity")),
                                                          -(r.get("lastSeenAt") or 0)))
        tasks = sorted(b.tasks.values(), key=lambda r: (-_sev(r.get("severity")), -(r.get("updatedAt") or 0)))
        objectives = sorted(b.objectives.values(), key=lambda r: r.get("name", ""))
        deliveries = sorted(b.deliveries.values(), key=lambda d: -(d.get("sentAt") or 0))
        windows = sorted(b.windows.values(), key=lambda w: -(w.get("updatedAt") or 0))
        audits = sorted(b.audits.values(), key=lambda r: -(r.get("at") or 0))
        notifier = self._book("notifications")
        out_primary: dict = {}
        for key, value in primary.items():
            if key == "event":
                out_primary[key] = value
            elif key == "incident":
                out_primary[key] = self._item("incidents", value, now)
            elif key == "alert":
                out_primary[key] = self._item("alerts", value, now)
            elif key == "remediation":
                out_primary[key] = self._item("remediation", value, now)
            elif key == "objective":
                out_primary[key] = self._item("objectives", value, now)
            elif key == "maintenanceWindow":
                out_primary[key] = self._item("maintenance", value, now)
            elif key == "notificationDelivery":
                out_primary[key] = notifier.delivery_item(value) if notifier is not None else value
            elif key == "audit":
                out_primary[key] = AuditLog.item(value)
            elif key == "coverageIssue":
                out_primary[key] = public_issue(value)
            else:
                out_primary[key] = value
        severities = [rank] if rank >= 0 else []
        severities += [_sev(r.get("severity")) for r in [*incidents, *alerts, *tasks, *issues]]
        if kind == "event" and "event" in primary:
            severities.append(_sev(primary["event"].get("severity")))
        scope = {"primaryType": kind}
        if query["primaryId"]:
            scope["primaryId"] = query["primaryId"]
        scope.update({k: query[k] for k in SELECTORS if query[k]})
        scope["timeType"] = query.get("timeType", "last_30d")
        summary = {
            "eventCount": event_count, "incidentCount": len(incidents), "alertCount": len(alerts),
            "remediationCount": len(tasks), "objectiveCount": len(objectives),
            "notificationDeliveryCount": len(deliveries), "maintenanceWindowCount": len(windows),
            "coverageIssueCount": len(issues), "topologyNodeCount": len(topology.get("nodes", [])),
            "topologyEdgeCount": len(topology.get("edges", [])), "auditCount": len(audits), "agentCount": len(agents),
            "workspaceCount": len(workspaces), "sourceCount": len(sources), "collectorCount": len(collectors),
            "riskCategories": categories,
        }
        if severities:
            summary["maxSeverity"] = SEVERITIES[max(0, min(4, max(severities)))]
        bundle = {
            "schemaVersion": SCHEMA, "bundleId": self.bundle_id(query), "generatedAt": iso_time(now), "scope": scope,
            "summary": summary, "primary": out_primary, "timeline": timeline, "events": events,
            "incidents": [self._item("incidents", r, now) for r in incidents[:limit]],
            "alerts": [self._item("alerts", r, now) for r in alerts[:limit]],
            "remediations": [self._item("remediation", r, now) for r in tasks[:limit]],
            "objectives": [self._item("objectives", r, now) for r in objectives[:limit]],
            "notificationDeliveries": [notifier.delivery_item(d) if notifier is not None else d for d in deliveries[:limit]],
            "maintenanceWindows": [self._item("maintenance", w, now) for w in windows[:limit]],
            "coverageIssues": [public_issue(i) for i in issues[:limit]],
            "topology": {"nodes": topology.get("nodes", [])[:limit * 3], "edges": topology.get("edges", [])[:limit * 3],
                         "summary": topology.get("summary", {})},
            "agents": agents[:limit], "workspaces": workspaces[:limit], "sources": sources[:limit],
            "collectors": collectors[:limit], "audits": [AuditLog.item(r) for r in audits[:limit]],
        }
        if channels:
            bundle["notificationChannels"] = list(channels.values())
        if routes:
            bundle["notificationRoutes"] = list(routes.values())
        return bundle

    # ---- export (§26.3) ------------------------------------------------------------------------
    async def export(self, body: dict, *, now: int | None = None) -> dict:
        now = now or now_ms()
        bundle = await self.build(body, now=now)
        content = markdown(bundle)
        return scrub({
            "schemaVersion": EXPORT_SCHEMA, "bundleId": bundle["bundleId"], "generatedAt": bundle["generatedAt"],
            "format": "markdown", "contentType": "text/markdown; charset=utf-8", "filename": f"{bundle['bundleId']}.md",
            "contentSha256": hashlib.sha256(content.encode("utf-8")).hexdigest(), "scope": bundle["scope"],
            "summary": bundle["summary"], "content": content,
        })


def summarize_rows(rows: list[tuple], n: int, anchor: int | None) -> tuple[list[tuple[str, int]], int, list[dict], int]:
    """The `_linked` summary of narrow rows (eventId, at, revision, status, category, name, severity):
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
        rank = max(rank, _sev(severity))
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


def _around(window: TimeWindow, anchor: int) -> TimeWindow:
    """A window that surely contains the anchor event (pins ignore the time window)."""
    return TimeWindow(min(window.start, anchor), max(window.end, anchor), window.time_type)


# ---- Markdown ----------------------------------------------------------------------------------------

def setup(engine) -> Evidence:
    evidence = Evidence(engine)
    engine.evidence = evidence
    return evidence
