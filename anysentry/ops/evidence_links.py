"""Exact links of an evidence bundle through the operational books (SPEC §26.1).

The books (incidents, alerts, remediation, objectives, notifications, maintenance, audit, coverage,
inventory, sources, collectors) are in memory, so following their links costs nothing: ids stored on
the objects themselves (incidentId, alertId, taskId, eventId, labels, delivery ids, audit details),
never a keyword search. `Bundle` is what a walk has collected; `Links` fills it and turns its asset
keys into inventory-shaped items (the inventory reads its own figures). The linked events themselves
are read by `evidence_events`."""

from __future__ import annotations

import logging
import time

from anysentry.events.timefmt import display_time
from anysentry.ops.inventory import AGENT_CLASSES, Inventory
from anysentry.ops.maintenance import SUPPRESSED_NOTE, target_matches
from anysentry.store.window import TimeWindow
from anysentry.ops.fields import text as _text

log = logging.getLogger("anysentry.ops.evidence")

MAX_LINKED = 500
COVERAGE_CACHE_SECS = 30.0
EXPLICIT_EVENT_LIMIT = 100


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


class Links:
    """Walks the books from a bundle's primary object; each kind of linked object is capped at MAX_LINKED."""

    def __init__(self, engine):
        self.engine = engine
        self._coverage_cache: dict[str, tuple[float, dict]] = {}

    # ---- books ---------------------------------------------------------------------------------
    def book(self, name: str):
        return getattr(self.engine, name, None)

    def values(self, name: str) -> list[dict]:
        book = self.book(name)
        try:
            return list(book.values()) if book is not None else []
        except Exception:
            return []

    def deliveries(self) -> list[dict]:
        notifier = self.book("notifications")
        book = getattr(notifier, "deliveries", None)
        return list(book.values()) if book is not None else []

    @property
    def inventory(self) -> Inventory | None:
        return self.book("inventory")

    # ---- coverage ------------------------------------------------------------------------------
    async def _coverage_issues(self, window: TimeWindow, now: int) -> dict[str, dict]:
        """Current coverage issues by id (the coverage default window), cached briefly: a bundle is a read."""
        coverage = self.book("coverage")
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

    async def issues(self, ids: list[str], window: TimeWindow, now: int) -> list[dict]:
        if not ids:
            return []
        # coverage is a statement about now: the issues of the coverage default window (cached briefly)
        found = await self._coverage_issues(TimeWindow.from_body({}, now=now), now)
        return [found[i] for i in ids if i in found]

    # ---- link closure --------------------------------------------------------------------------
    def close(self, b: Bundle, issue_ids: list[str]) -> None:
        """Follow exact links between incidents, alerts, tasks, objectives, issues and deliveries
        (a breadth-first walk over reverse indexes of the books, bounded by MAX_LINKED each)."""
        incidents, objectives = self.book("incidents"), self.book("objectives")
        alerts_by: dict[tuple[str, str], list[dict]] = {}
        tasks_by: dict[tuple[str, str], list[dict]] = {}
        alerts_by_id: dict[str, dict] = {}
        tasks_by_id: dict[str, dict] = {}
        for alert in self.values("alerts"):
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
        for task in self.values("remediation"):
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
        for delivery in self.deliveries():
            if len(b.deliveries) >= MAX_LINKED:
                break
            if any(delivery.get(k) and delivery.get(k) in ids for k, ids in wanted.items()):
                b.deliveries[delivery["deliveryId"]] = delivery

    def audits(self, b: Bundle, extra_ids: set[str]) -> None:
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

    def windows(self, b: Bundle, now: int) -> None:
        """Maintenance windows that exactly target an asset of the bundle."""
        maintenance = self.book("maintenance")
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

    def _scope_match(self, record: dict, scope: dict, source_key: str = "sourceId") -> bool:
        for key, value in scope.items():
            have = record.get(source_key if key == "sourceId" else key) or ""
            if have != value:
                return False
        return True

    # ---- per-type context ----------------------------------------------------------------------
    def _target(self, b: Bundle, kind: object, target: str, *, bare_agents: bool = False) -> None:
        """An objective's or window's target into the bundle's scope; `bare_agents`: an agent named
        without its workspace (`agentId` rather than `workspace:agentId`) is looked up in the inventory."""
        if not target:
            return
        if kind == "workspace":
            b.workspaces.add(target)
        elif kind == "agent":
            ws, sep, agent = target.rpartition(":")
            if sep and ws:
                b.agents.add((ws, agent))
                b.workspaces.add(ws)
            elif bare_agents:
                for meta in self._values_of_inventory():
                    if meta.get("agentId") == target:
                        b.agents.add((meta.get("workspacePath", ""), target))
        elif kind == "collector":
            b.collectors.add(target)
        elif kind == "source":
            b.sources.add(target)

    def objective_target(self, b: Bundle, record: dict) -> None:
        self._target(b, record.get("targetType"), record.get("targetId") or "")

    def maintenance_context(self, b: Bundle, window: dict) -> None:
        kind, target = window.get("targetType"), window.get("targetId") or ""
        self._target(b, kind, target, bare_agents=True)
        keys = set(window.get("suppressedKeys") or [])
        for alert in self.values("alerts"):
            if len(b.alerts) >= MAX_LINKED:
                break
            if alert.get("dedupeKey") in keys or (alert.get("note") == SUPPRESSED_NOTE
                                                 and target_matches(kind or "all", target, alert)):
                b.alerts[alert["alertId"]] = alert

    def _values_of_inventory(self) -> list[dict]:
        inventory = self.inventory
        return inventory.metadata.values() if inventory is not None else []

    def audit_links(self, b: Bundle, record: dict) -> set[str]:
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
            store = self.book(book)
            if isinstance(value, str) and value and store is not None and store.get(value) is not None:
                target[value] = store.get(value)
        if isinstance(refs.get("deliveryId"), str) and refs["deliveryId"]:
            for delivery in self.deliveries():
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

    def channel_history(self, delivery: dict, b: Bundle, channels: dict, routes: dict) -> None:
        notifier = self.book("notifications")
        if notifier is None:
            return
        channel = notifier.channel(delivery.get("channelId") or "") if hasattr(notifier, "channel") else None
        if channel is not None:
            channels[channel["channelId"]] = notifier.channel_item(channel)
        route = notifier.routes.get(delivery.get("routeId") or "") if delivery.get("routeId") else None
        if route is not None:
            routes[route["routeId"]] = notifier.route_item(route)
        history = [d for d in self.deliveries() if d.get("alertId") == delivery.get("alertId")
                   or (d.get("channelId") == delivery.get("channelId") and d.get("routeId") == delivery.get("routeId"))]
        history.sort(key=lambda d: -(d.get("sentAt") or 0))
        for entry in history[:50]:
            b.deliveries[entry["deliveryId"]] = entry

    def scope_objects(self, b: Bundle, scope: dict) -> str:
        """Incidents, alerts, tasks and deliveries whose exact context is the scope. Returns the
        workspace of a unique metadata-only agent (§26.1), if that is what the scope names."""
        if not scope:
            return ""
        for record in self.values("incidents"):
            if self._scope_match(record, scope) and len(b.incidents) < MAX_LINKED:
                b.incidents[record["incidentId"]] = record
        for record in self.values("alerts"):
            if self._scope_match(record, scope) and len(b.alerts) < MAX_LINKED:
                b.alerts[record["alertId"]] = record
        for record in self.values("remediation"):
            if self._scope_match(record, scope, "ingestionSourceId") and len(b.tasks) < MAX_LINKED:
                b.tasks[record["taskId"]] = record
        alert_scope = {k: v for k, v in scope.items() if k in ("workspacePath", "agentId", "collectorId", "sourceId")}
        if alert_scope and alert_scope == scope:
            for delivery in self.deliveries():
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

    async def assets(self, b: Bundle, kind: str, scope: dict, window: TimeWindow, now: int,
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

    def collector_items(self, b: Bundle, window: TimeWindow, now: int) -> list[dict]:
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
