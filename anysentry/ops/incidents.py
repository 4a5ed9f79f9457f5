"""Incidents (SPEC §15): judged non-allow events grouped into something a person can own.

Every final (decisionStatus `succeeded`) block or escalate event lands in the incident
`hashId("inc", [workspacePath, agentId, sessionId, traceId, runId, riskCategory])`: severity only
rises, the count and last-event fields follow the newest event, a resolved incident reopens. A
re-posted event (same eventId) is recognised and not counted twice.

The incident rules of §16.2 live here because they read incident state: `incident.high_or_critical`,
`event.critical_block` and `agent.open_incidents`, raised through `engine.alerts`."""

from __future__ import annotations

import logging
from collections import OrderedDict

from anysentry.events.ids import hash_id
from anysentry.events.model import AgentEvent
from anysentry.events.redact import redact_recurring, redact_text
from anysentry.events.timefmt import display_time, now_ms
from anysentry.judge.decision import severity_rank
from anysentry.ops.book import Book
from anysentry.ops.fields import redacted_text as _text

log = logging.getLogger("anysentry.ops.incidents")

STATUSES = ("open", "acknowledged", "resolved")
STATUS_ORDER = {"open": 0, "acknowledged": 1, "resolved": 2}
TIME_FIELDS = ("openedAt", "updatedAt", "lastEventAt", "acknowledgedAt", "resolvedAt", "firstEventAt", "reopenedAt")
RECENT_EVENT_IDS = 32  # per incident, persisted: a re-post (a producer retry) after a restart is still recognised
SEEN_CACHE = 100_000  # process-wide eventId → incidentId, for re-posts of older events
MAX_INCIDENTS = 20_000


def incident_id_for(event: AgentEvent) -> str:
    return hash_id("inc", [event.workspacePath, event.agentId, event.sessionId, event.traceId, event.runId,
                           event.riskCategory])


def incident_item(record: dict) -> dict:
    out = {k: v for k, v in record.items() if not k.startswith("_") and v is not None}
    for key in TIME_FIELDS:
        if out.get(key):
            out[key] = display_time(out[key])
        else:
            out.pop(key, None)
    return out


def _attribution(event: AgentEvent) -> tuple[bool | None, str]:
    attribution = event.attribution if isinstance(event.attribution, dict) else {}
    monitored = attribution.get("monitored")
    return (monitored if isinstance(monitored, bool) else None), str(attribution.get("agentScopeId") or "")


def _alert_settings(engine):
    alerts = getattr(engine, "alerts", None)
    return getattr(alerts, "settings", None)


class IncidentBook(Book):
    table_name = "incidents"
    id_field = "incidentId"
    max_records = MAX_INCIDENTS

    def __init__(self, engine):
        super().__init__()
        self.engine = engine
        self._seen: OrderedDict[str, str] = OrderedDict()
        self._by_agent: dict[tuple[str, str], set[str]] = {}  # (workspacePath, agentId) → incident ids

    def _index(self, record: dict) -> None:
        key = (record.get("workspacePath", ""), record.get("agentId", ""))
        self._by_agent.setdefault(key, set()).add(record["incidentId"])

    def load(self, records) -> None:
        super().load(records)
        for record in self.records.values():
            self._index(record)

    def remove(self, key: str) -> None:
        record = self.records.get(key)
        if record is not None:
            ids = self._by_agent.get((record.get("workspacePath", ""), record.get("agentId", "")))
            if ids is not None:
                ids.discard(key)
        super().remove(key)

    def for_agent(self, workspace: str, agent: str) -> list[dict]:
        ids = self._by_agent.get((workspace, agent), ())
        return [self.records[i] for i in ids if i in self.records]

    def _trim(self) -> None:
        if len(self.records) <= self.max_records:
            return
        excess = len(self.records) - self.max_records
        order = sorted(self.records.values(), key=lambda r: (r.get("status") != "resolved", r.get("updatedAt") or 0))
        for record in order[:excess]:
            self.remove(record["incidentId"])

    def open_incidents(self) -> list[dict]:
        return [r for r in self.records.values() if r.get("status") == "open"]

    @staticmethod
    def item(record: dict) -> dict:
        return incident_item(record)

    # ---- events ------------------------------------------------------------------------------
    def on_events(self, events: list[AgentEvent]) -> None:
        touched: dict[tuple[str, str], bool] = {}
        now = now_ms()
        for event in events:
            if event.verdict == "allow" or event.decisionStatus != "succeeded":
                continue
            try:
                opened = self._apply(event, now)
            except Exception:
                log.exception("incident update failed for %s", event.eventId)
                continue
            if opened is None:
                continue
            key = (event.workspacePath, event.agentId)
            touched[key] = touched.get(key, False) or opened
        for (workspace, agent), opened in touched.items():
            self.evaluate_agent(workspace, agent, increment=opened, now=now)

    def _seen_before(self, event_id: str, incident_id: str, record: dict | None) -> bool:
        if self._seen.get(event_id) == incident_id:
            return True
        return record is not None and event_id in record.get("_recentEventIds", ())

    def _remember(self, event_id: str, incident_id: str, record: dict) -> None:
        self._seen[event_id] = incident_id
        if len(self._seen) > SEEN_CACHE:
            self._seen.popitem(last=False)
        recent = record.setdefault("_recentEventIds", [])
        recent.append(event_id)
        if len(recent) > RECENT_EVENT_IDS:
            del recent[: len(recent) - RECENT_EVENT_IDS]

    def _apply(self, event: AgentEvent, now: int) -> bool | None:
        """Fold one event in. True if it opened or reopened the incident, False if it updated it,
        None if it was already counted."""
        incident_id = incident_id_for(event)
        record = self.records.get(incident_id)
        if self._seen_before(event.eventId, incident_id, record):
            return None
        monitored, scope = _attribution(event)
        subject = redact_recurring(event.subject or "")[:500]
        opened = False
        if record is None:
            record = {
                "incidentId": incident_id, "status": "open", "severity": event.severity,
                "title": redact_text(f"{event.riskName} · {event.agentId}")[:240],
                "description": redact_text(f"{event.subject} ({event.reason})")[:1000],
                "workspacePath": event.workspacePath, "agentId": event.agentId, "collectorId": event.collectorId,
                "sourceId": event.sourceId, "sessionId": event.sessionId, "userId": event.userId,
                "traceId": event.traceId, "runId": event.runId, "riskCategory": event.riskCategory,
                "riskName": event.riskName, "riskType": event.riskType, "eventCount": 0,
                "firstEventId": event.eventId, "firstEventAt": event.at, "maxRiskScore": 0,
                "openedAt": now, "updatedAt": now,
            }
            self._index(record)
            opened = True
        elif record.get("status") == "resolved":
            record["status"] = "open"
            record.pop("resolvedAt", None)
            record.pop("acknowledgedAt", None)
            record["reopenedAt"] = now
            opened = True
        if severity_rank(event.severity) > severity_rank(record.get("severity", "info")):
            record["severity"] = event.severity
        record["eventCount"] = int(record.get("eventCount") or 0) + 1
        if event.at >= (record.get("lastEventAt") or 0):
            record["lastEventId"] = event.eventId
            record["lastEventAt"] = event.at
            record["lastEventSubject"] = subject
            if event.collectorId:
                record["collectorId"] = event.collectorId
            if event.sourceId:
                record["sourceId"] = event.sourceId
        record["maxRiskScore"] = max(float(record.get("maxRiskScore") or 0), float(event.riskScore or 0))
        if monitored is not None:
            record["monitored"] = bool(record.get("monitored")) or monitored
        if scope:
            record["agentScopeId"] = scope
        record["updatedAt"] = now
        self._remember(event.eventId, incident_id, record)
        self.put(record)
        self._incident_alert(record, event, now)
        self._event_alert(record, event, now)
        return opened

    # ---- alerts ------------------------------------------------------------------------------
    def _context(self, record: dict, event: AgentEvent | None = None) -> dict:
        ctx = {k: record.get(k) for k in ("workspacePath", "agentId", "sessionId", "userId", "traceId", "runId",
                                          "collectorId", "sourceId", "riskCategory", "riskName", "agentScopeId",
                                          "monitored")}
        ctx["incidentId"] = record["incidentId"]
        ctx["eventId"] = event.eventId if event is not None else record.get("lastEventId")
        if event is not None and isinstance(event.attributes, dict) and event.attributes.get("collectorNode"):
            ctx["nodeName"] = event.attributes["collectorNode"]
        return ctx

    def _incident_alert(self, record: dict, event: AgentEvent | None, now: int, *, increment: bool = True) -> dict | None:
        alerts = getattr(self.engine, "alerts", None)
        settings = _alert_settings(self.engine)
        if alerts is None or settings is None or record.get("status") == "resolved":
            return None
        if severity_rank(record.get("severity", "info")) < severity_rank(settings.incident_min_severity):
            return None
        return alerts.upsert(
            rule_id="incident.high_or_critical", kind="incident", dedupe_key=f"incident:{record['incidentId']}",
            severity=record["severity"], title=f"{record['severity'].capitalize()} incident: {record['title']}",
            description=record.get("description", ""),
            source_summary=f"{record.get('eventCount', 0)} events; last: {record.get('lastEventSubject', '')}",
            context=self._context(record, event), labels={"incidentId": record["incidentId"]},
            increment=increment, now=now)

    def _event_alert(self, record: dict, event: AgentEvent, now: int) -> None:
        alerts = getattr(self.engine, "alerts", None)
        settings = _alert_settings(self.engine)
        if alerts is None or settings is None or event.verdict != "block":
            return
        if severity_rank(event.severity) < severity_rank(settings.event_min_severity):
            return
        alerts.upsert(
            rule_id="event.critical_block", kind="event",
            dedupe_key=f"event:{event.workspacePath}:{event.agentId}:{event.traceId}:{event.riskCategory}",
            severity=event.severity, title=f"Blocked {event.severity} event: {event.riskName} · {event.agentId}",
            description=f"{event.subject} ({event.reason})",
            source_summary=f"{event.eventKind} {event.subject}"[:500],
            context=self._context(record, event),
            labels={"incidentId": record["incidentId"], "eventId": event.eventId}, now=now)

    def evaluate_agent(self, workspace: str, agent: str, *, increment: bool = False, now: int | None = None) -> None:
        """`agent.open_incidents`: raised at ≥ threshold open incidents, resolved below."""
        alerts = getattr(self.engine, "alerts", None)
        settings = _alert_settings(self.engine)
        if alerts is None or settings is None:
            return
        now = now or now_ms()
        key = f"agent:{workspace}:{agent}:open-incidents"
        mine = [r for r in self.for_agent(workspace, agent) if r.get("status") == "open"]
        threshold = settings.agent_open_incident_threshold
        if len(mine) < threshold:
            alerts.resolve(key, f"open incidents below threshold ({len(mine)} < {threshold})", now=now)
            return
        worst = max((r.get("severity", "info") for r in mine), key=severity_rank)
        severity = "critical" if worst == "critical" or len(mine) >= 2 * threshold else "high"
        latest = max(mine, key=lambda r: r.get("lastEventAt") or 0)
        ctx = {k: latest.get(k) for k in ("workspacePath", "agentId", "collectorId", "sourceId", "agentScopeId",
                                          "monitored", "userId")}
        alerts.upsert(rule_id="agent.open_incidents", kind="agent", dedupe_key=key, severity=severity,
                      title=f"Agent {agent} has {len(mine)} open incidents",
                      description=f"{len(mine)} open incidents for agent {agent} in {workspace} "
                                  f"(threshold {threshold}); worst severity {worst}",
                      source_summary=", ".join(sorted({r.get('riskName', '') for r in mine}))[:500],
                      context=ctx, labels={"openIncidents": len(mine), "threshold": threshold},
                      increment=increment, now=now)

    # ---- management --------------------------------------------------------------------------
    def update(self, incident_id: str, *, status: str | None = None, owner: object = None, note: object = None,
               actor: dict | None = None, now: int | None = None) -> dict | None:
        """`PUT /incidents/:incidentId` (§15); None for an unknown id."""
        record = self.records.get(incident_id)
        if record is None:
            return None
        now = now or now_ms()
        previous = record.get("status")
        if status == "acknowledged":
            record["status"] = "acknowledged"
            record["acknowledgedAt"] = now
            record.pop("resolvedAt", None)
        elif status == "resolved":
            record["status"] = "resolved"
            record["resolvedAt"] = now
        elif status == "open":
            record["status"] = "open"
            record.pop("acknowledgedAt", None)
            record.pop("resolvedAt", None)
        if owner is not None:
            record["owner"] = _text(owner, 120)
        if note is not None:
            record["note"] = _text(note, 2000)
        record["updatedAt"] = now
        self.touch(record)
        alert_id = self._sync_alert(record, status, previous, actor, now)
        audit = getattr(self.engine, "audit", None)
        if audit is not None:
            audit.record("incident.updated", "incident", incident_id,
                         f"incident {record.get('title') or incident_id}: {previous} → {record['status']}",
                         actor=actor, details={"incidentId": incident_id, "previousStatus": previous,
                                               "status": record["status"], "owner": record.get("owner"),
                                               "note": record.get("note"), "alertId": alert_id,
                                               "workspacePath": record.get("workspacePath"),
                                               "agentId": record.get("agentId")})
        if status in STATUSES and status != previous:
            self.evaluate_agent(record.get("workspacePath", ""), record.get("agentId", ""), now=now)
        return record

    def _sync_alert(self, record: dict, status: str | None, previous: str | None, actor: dict | None,
                    now: int) -> str | None:
        """Acknowledge / resolve / reopen the incident's `incident.high_or_critical` alert with it."""
        alerts = getattr(self.engine, "alerts", None)
        if alerts is None or status not in STATUSES or status == previous:
            return None
        alert = alerts.get(hash_id("alt", [f"incident:{record['incidentId']}"]))
        if status == "open":
            if alert is None:
                created = self._incident_alert(record, None, now, increment=False)
                return created["alertId"] if created else None
            if alert.get("status") != "open":
                alerts.update(alert["alertId"], status="open", actor=actor, now=now)
            return alert["alertId"]
        if alert is None:
            return None
        if status == "acknowledged" and alert.get("status") in ("open", "silenced"):
            alerts.update(alert["alertId"], status="acknowledged", actor=actor, now=now)
        elif status == "resolved" and alert.get("status") != "resolved":
            alerts.update(alert["alertId"], status="resolved", actor=actor, now=now)
        return alert["alertId"]


def setup(engine) -> IncidentBook:
    book = IncidentBook(engine)
    engine.incidents = book
    engine.register_book(book)
    engine.event_listeners.append(book.on_events)
    return book
