"""Evidence bundles and their Markdown export (SPEC §26).

A bundle starts from one primary object (by the precedence of §26.1) and follows exact links outward:
ids stored on the objects themselves (incidentId, alertId, taskId, eventId, labels, delivery ids,
audit details), never a keyword search. The operational books are in memory, so their links cost
nothing (`evidence_links`); events are read from the store by exact ids and exact column filters only,
each read bounded by the time window and a LIMIT (`evidence_events`). This module picks the primary,
drives the two and shapes the bundle; `evidence_markdown` renders the export.

Everything leaving here passes a final value-redaction pass (§5): no secret reaches a bundle or export."""

from __future__ import annotations

import hashlib

import orjson

from anysentry.events.ids import hash_id
from anysentry.events.redact import REDACTED, is_sensitive_key, redact_text
from anysentry.events.timefmt import display_time, iso_time, now_ms
from anysentry.ops.audit import AuditLog
from anysentry.ops.evidence_events import Filter, LinkedEvents, incident_events, severity_rank as _sev
from anysentry.ops.evidence_links import MAX_LINKED, Bundle, Links
from anysentry.ops.inventory import SEVERITIES, Inventory, event_item
from anysentry.ops.topology import KIND_EDGES, TARGET_SQL, Graph, graph_from_events, parse_edge_id, render
from anysentry.store.window import TimeWindow
from anysentry.ops.evidence_markdown import markdown
from anysentry.ops.fields import clamp as _clamp, text as _text

SCHEMA = "anysentry.evidence_bundle.v1"
EXPORT_SCHEMA = "anysentry.evidence_export.v1"
SELECTORS = ("auditId", "edgeId", "eventId", "incidentId", "alertId", "taskId", "objectiveId", "issueId", "deliveryId",
             "windowId", "workspacePath", "agentId", "collectorId", "sourceId", "traceId", "runId", "sessionId")
SCOPE_KEYS = ("workspacePath", "agentId", "collectorId", "sourceId", "traceId", "runId", "sessionId")
PRECEDENCE = (("audit", "auditId"), ("topology", "edgeId"), ("notification", "deliveryId"), ("maintenance", "windowId"),
              ("objective", "objectiveId"), ("remediation", "taskId"), ("alert", "alertId"), ("incident", "incidentId"),
              ("event", "eventId"), ("coverage", "issueId"))
RISKY = ("block", "escalate")
EXPLICIT_FETCH = 20  # linked events read by id per bundle (a scope's own events are its evidence)


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


class Evidence:
    """Picks the primary object, drives the link walk (`links`) and the event reads (`reads`), shapes the bundle."""

    def __init__(self, engine):
        self.engine = engine
        self.links = Links(engine)
        self.reads = LinkedEvents(engine)

    @property
    def inventory(self) -> Inventory | None:
        return self.links.inventory

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

    # ---- primaries -----------------------------------------------------------------------------
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
            explicit = await self.reads.rows_by_ids([pid])
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
                incidents = self.links.book("incidents")
                for record in (incidents.values() if incidents is not None else []):
                    if (risky and record["incidentId"] == inc_id) or pid in (record.get("lastEventId"), record.get("firstEventId")):
                        b.incidents[record["incidentId"]] = record
                for alert in self.links.values("alerts"):
                    if pid in (alert.get("eventId"), (alert.get("labels") or {}).get("eventId")):
                        b.alerts[alert["alertId"]] = alert
                for task in self.links.values("remediation"):
                    if task.get("eventId") == pid:
                        b.tasks[task["taskId"]] = task
        elif kind == "incident":
            record = self.links.book("incidents").get(pid) if self.links.book("incidents") is not None else None
            if record is not None:
                primary["incident"] = record
                b.incidents[pid] = record
                flt = incident_events(record)
                anchor = record.get("lastEventAt")
                timeline_flt = trace_of(record)
        elif kind == "alert":
            record = self.links.book("alerts").get(pid) if self.links.book("alerts") is not None else None
            if record is not None:
                primary["alert"] = record
                b.alerts[pid] = record
                incident = (self.links.book("incidents").get(record.get("incidentId") or "")
                            if self.links.book("incidents") is not None else None)
                if record.get("ruleId") == "event.critical_block":
                    flt = Filter(workspacePath=record.get("workspacePath", ""), agentId=record.get("agentId", ""),
                                 traceId=record.get("traceId", ""), riskCategory=record.get("riskCategory", ""))
                    flt.raw("verdict = 'block'")
                elif incident is not None:
                    flt = incident_events(incident)
                    anchor = incident.get("lastEventAt")
                timeline_flt = trace_of(record)
        elif kind == "remediation":
            record = self.links.book("remediation").get(pid) if self.links.book("remediation") is not None else None
            if record is not None:
                primary["remediation"] = record
                b.tasks[pid] = record
                timeline_flt = trace_of(record)
        elif kind == "objective":
            record = self.links.book("objectives").get(pid) if self.links.book("objectives") is not None else None
            if record is not None:
                primary["objective"] = record
                b.objectives[pid] = record
                self.links.objective_target(b, record)
        elif kind == "coverage":
            b.issue_ids.append(pid)
        elif kind == "notification":
            for delivery in self.links.deliveries():
                if delivery.get("deliveryId") == pid:
                    primary["notificationDelivery"] = delivery
                    b.deliveries[pid] = delivery
                    alert = self.links.book("alerts").get(delivery.get("alertId") or "") if self.links.book("alerts") is not None else None
                    if alert is not None:
                        b.alerts[alert["alertId"]] = alert
                    for key, book in (("incidentId", "incidents"), ("taskId", "remediation"), ("objectiveId", "objectives")):
                        found = self.links.book(book).get(delivery.get(key) or "") if self.links.book(book) is not None else None
                        if found is not None:
                            {"incidents": b.incidents, "remediation": b.tasks, "objectives": b.objectives}[book][delivery[key]] = found
                    if delivery.get("issueId"):
                        b.issue_ids.append(delivery["issueId"])
                    b.add_event_id(delivery.get("eventId"))
                    b.add_context(delivery)
                    self.links.channel_history(delivery, b, channels, routes)
                    break
        elif kind == "maintenance":
            maintenance = self.links.book("maintenance")
            window_rec = maintenance.get(pid) if maintenance is not None else None
            if window_rec is not None:
                primary["maintenanceWindow"] = window_rec
                b.windows[pid] = window_rec
                self.links.maintenance_context(b, window_rec)
        elif kind == "audit":
            audit = getattr(self.engine, "audit", None)
            record = next((r for r in (audit.records if audit is not None else []) if r.get("auditId") == pid), None)
            if record is not None:
                primary["audit"] = record
                b.audits[pid] = record
                extra_ids |= self.links.audit_links(b, record)
        elif kind == "topology":
            parsed = parse_edge_id(pid)
            topo = self.links.book("topology")
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
            meta_workspace = self.links.scope_objects(b, scope)
            if scope.get("traceId") or scope.get("runId") or scope.get("sessionId"):
                timeline_flt = Filter(**{k: scope[k] for k in ("traceId", "runId", "sessionId") if scope.get(k)})

        # exact links between the operational objects, then the events they name
        self.links.close(b, b.issue_ids)
        missing = [e for e in b.event_ids if e not in explicit][:EXPLICIT_FETCH] if kind != "scope" else []
        known: dict[str, int] = {}
        for incident in b.incidents.values():  # incidents know when their first and last events happened
            for key, at in (("lastEventId", "lastEventAt"), ("firstEventId", "firstEventAt")):
                if incident.get(key) and isinstance(incident.get(at), int):
                    known[incident[key]] = incident[at]
        if missing:
            explicit.update(await self.reads.rows_at([(e, known[e]) for e in missing if e in known]))
            unknown = [e for e in missing if e not in explicit]
            if unknown:
                explicit.update(await self.reads.rows_by_ids(unknown))
        if timeline_flt is None and kind in ("remediation", "notification", "audit", "coverage", "objective") and explicit:
            first = explicit.get(b.event_ids[0]) if b.event_ids else None
            if first is not None and first.get("traceId"):
                timeline_flt, anchor = Filter(traceId=first["traceId"]), int(first["at"])
        if anchor is None and timeline_flt is not None and b.event_ids and b.event_ids[0] in explicit:
            anchor = int(explicit[b.event_ids[0]]["at"])

        around = _around(window, anchor) if anchor else window
        small = kind in ("event", "incident", "alert") or bool(scope.keys() & {"traceId", "runId", "sessionId"})
        pairs, count, categories, rank = await self.reads.linked(flt, around, limit, anchor, small)
        timeline_pairs: list[tuple[str, int]] = []
        if timeline_flt is not None and kind != "event":
            timeline_pairs = await self.reads.ids(timeline_flt, around, limit, anchor)
        fetched = await self.reads.rows_at([p for p in pairs + timeline_pairs if p[0] not in explicit])
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
            issues = await self.links.issues(b.issue_ids[:MAX_LINKED], window, now)
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
                maintenance = self.links.book("maintenance")
                if issue.get("maintenanceWindowId") and maintenance is not None and maintenance.get(issue["maintenanceWindowId"]):
                    b.windows[issue["maintenanceWindowId"]] = maintenance.get(issue["maintenanceWindowId"])
            if kind == "coverage" and issues and issues[0].get("evidenceEventId") and not events:
                more = await self.reads.rows_by_ids([issues[0]["evidenceEventId"]])
                events = [event_item(r, inventory) for r in more.values()]
                event_count = max(event_count, len(events))
                for row in more.values():
                    rank = max(rank, _sev(row.get("severity")))

        # asset context
        last_seen: dict[tuple[str, str], int] = {}
        for row in rows.values():
            key = (row.get("workspacePath", ""), row.get("agentId", ""))
            last_seen[key] = max(last_seen.get(key, 0), int(row["at"]))
        agents, workspaces = await self.links.assets(b, kind, scope, window, now, meta_workspace, last_seen)
        self.links.windows(b, now)
        self.links.audits(b, extra_ids | {e["eventId"] for e in events} | {a for _, a in b.agents})
        if topology is None:
            topology = graph_from_events(events)
        sources = [self.engine.sources.item(s, now) for s in (self.engine.sources.get(i) for i in sorted(b.sources)) if s]
        collectors = self.links.collector_items(b, window, now)
        bundle = self._assemble(query, now, primary, b, events, event_count, categories, rank, timeline, issues,
                                topology, agents, workspaces, sources, collectors, channels, routes, limit)
        return scrub(bundle)

    # ---- assembly ------------------------------------------------------------------------------
    def _item(self, book_name: str, record: dict, now: int) -> dict:
        book = self.links.book(book_name)
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
        notifier = self.links.book("notifications")
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


def _around(window: TimeWindow, anchor: int) -> TimeWindow:
    """A window that surely contains the anchor event (pins ignore the time window)."""
    return TimeWindow(min(window.start, anchor), max(window.end, anchor), window.time_type)


def setup(engine) -> Evidence:
    evidence = Evidence(engine)
    engine.evidence = evidence
    return evidence
