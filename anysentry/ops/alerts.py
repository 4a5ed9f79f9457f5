"""Alerts (SPEC §16): findings worth a person's attention, deduplicated, with a lifecycle.

Every rule raises an alert through `AlertBook.upsert(dedupe_key=...)`: the same finding is always the
same alert (`alertId = hashId("alt", [dedupeKey])`), so a storm of identical findings is one alert
whose `occurrenceCount` grows, never a storm of alerts or notifications. Notifications are only
enqueued here (`engine.notifications.notify`); delivery happens off the ingest path.

This module owns the alert book, the settings of §16.1/§31, the rule table and the collector and
source rules (heartbeats, rejected ingest, check-ins, the 30 s availability timer). Incident, event
and agent alerts are raised by `anysentry.ops.incidents`; coverage, objective and remediation alerts
by their areas, all through `upsert` / `resolve`.

Wiring:
- `setup(engine)` sets `engine.alerts` (the book) and `engine.check_in(record, body, status)`.
- `attach(services)` (called once by the API process) appends `engine.check_in` to
  `services.check_in_listeners` so `/sources/check-in` raises/resolves `source.check_in_error`."""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from typing import Callable

from anysentry.events.ids import hash_id
from anysentry.events.timefmt import display_time, now_ms
from anysentry.judge.decision import SEVERITIES, severity_rank
from anysentry.ops.book import Book
from anysentry.ops.fields import clamp as _clamp
from anysentry.ops.fields import redacted_text as _text

log = logging.getLogger("anysentry.ops.alerts")

ACTIVE = ("open", "acknowledged", "silenced")
STATUSES = ("open", "acknowledged", "silenced", "resolved")
STATUS_ORDER = {"open": 0, "acknowledged": 1, "silenced": 2, "resolved": 3}
KINDS = ("incident", "event", "agent", "collector", "source", "coverage", "objective", "remediation")
SUPPRESSED_NOTE = "suppressed by maintenance window"
CONTEXT_KEYS = ("workspacePath", "agentId", "sessionId", "userId", "traceId", "runId", "incidentId", "eventId",
                "collectorId", "sourceId", "nodeName", "riskCategory", "riskName", "agentScopeId")
TIME_FIELDS = ("firstSeenAt", "lastSeenAt", "updatedAt", "acknowledgedAt", "resolvedAt", "silencedUntil",
               "lastNotificationAt")
MAX_ALERTS = 2000
AVAILABILITY_TIMER = "alerts.availability"
AVAILABILITY_INTERVAL_SECS = 30.0


def _env_int(name: str, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(os.environ.get(name, default))))
    except (TypeError, ValueError):
        return default


def _env_severity(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip().lower()
    return value if value in SEVERITIES else default


@dataclass(frozen=True)
class AlertSettings:
    """§16.1 / §31. Collector and source ages follow the collector and source registries' settings."""

    enabled: bool = True
    webhook_url: str = ""
    cooldown_secs: int = 300
    incident_min_severity: str = "high"
    event_min_severity: str = "critical"
    agent_open_incident_threshold: int = 3
    collector_stale_after_secs: int = 180
    collector_down_after_secs: int = 600
    source_stale_after_secs: int = 600
    source_down_after_secs: int = 1800

    @classmethod
    def from_env(cls, engine=None) -> "AlertSettings":
        collector = getattr(getattr(engine, "collectors", None), "settings", None)
        source = getattr(getattr(engine, "sources", None), "settings", None)
        return cls(
            enabled=os.environ.get("ANYSENTRY_ALERTS", "on").strip().lower() not in ("off", "0", "false", "no", "disabled"),
            webhook_url=os.environ.get("ANYSENTRY_ALERT_WEBHOOK_URL", "").strip(),
            cooldown_secs=_env_int("ANYSENTRY_ALERT_WEBHOOK_COOLDOWN_SECS", 300, 30, 86400),
            incident_min_severity=_env_severity("ANYSENTRY_ALERT_INCIDENT_MIN_SEVERITY", "high"),
            event_min_severity=_env_severity("ANYSENTRY_ALERT_EVENT_MIN_SEVERITY", "critical"),
            agent_open_incident_threshold=_env_int("ANYSENTRY_ALERT_AGENT_OPEN_INCIDENT_THRESHOLD", 3, 1, 100),
            collector_stale_after_secs=getattr(collector, "stale_after_secs", None)
            or _env_int("ANYSENTRY_COLLECTOR_STALE_AFTER_SECS", 180, 1, 10**7),
            collector_down_after_secs=getattr(collector, "down_after_secs", None)
            or _env_int("ANYSENTRY_COLLECTOR_DOWN_AFTER_SECS", 600, 1, 10**7),
            source_stale_after_secs=getattr(source, "stale_after_secs", None)
            or _env_int("ANYSENTRY_SOURCE_STALE_AFTER_SECS", 600, 1, 10**7),
            source_down_after_secs=getattr(source, "down_after_secs", None)
            or _env_int("ANYSENTRY_SOURCE_DOWN_AFTER_SECS", 1800, 1, 10**7),
        )

    def config(self, webhook_configured: bool) -> dict:
        return {
            "enabled": self.enabled,
            "webhookConfigured": webhook_configured,
            "webhookCooldownSecs": self.cooldown_secs,
            "incidentMinSeverity": self.incident_min_severity,
            "eventMinSeverity": self.event_min_severity,
            "agentOpenIncidentThreshold": self.agent_open_incident_threshold,
            "collectorStaleAfterSecs": self.collector_stale_after_secs,
            "collectorDownAfterSecs": self.collector_down_after_secs,
            "sourceStaleAfterSecs": self.source_stale_after_secs,
            "sourceDownAfterSecs": self.source_down_after_secs,
        }


def rules(settings: AlertSettings) -> list[dict]:
    """The eleven rules of §16.2 as listed by `/alerts/list` (severity = the highest it raises)."""
    threshold = settings.agent_open_incident_threshold
    table = (
        ("incident.high_or_critical", "High or critical incident", "incident", settings.incident_min_severity,
         f"An open incident reaches {settings.incident_min_severity} severity or more; acknowledging or resolving "
         "the incident does the same to the alert."),
        ("event.critical_block", "Critical blocked event", "event", settings.event_min_severity,
         f"A blocked event of {settings.event_min_severity} severity or more."),
        ("agent.open_incidents", "Agent with many open incidents", "agent", "critical",
         f"An agent has {threshold} or more open incidents (critical at {2 * threshold} or with a critical "
         "incident); resolves below the threshold."),
        ("collector.quality", "Collector degraded", "collector", "high",
         "A heartbeat reports a non-ok status, dropped events or errors; a clean heartbeat resolves it."),
        ("collector.availability", "Collector stale or down", "collector", "critical",
         f"No heartbeat for {settings.collector_stale_after_secs} s (high) or {settings.collector_down_after_secs} s "
         "(critical); a new heartbeat resolves it."),
        ("source.rejected_ingest", "Rejected ingest", "source", "high",
         "A producer request was rejected (bad token, disabled source, unparseable input)."),
        ("source.check_in_error", "Source check-in error", "source", "high",
         "A source check-in or heartbeat reports an error; an ok check-in resolves it."),
        ("source.availability", "Source silent", "source", "high",
         f"An enabled source that has signalled before is silent for {settings.source_stale_after_secs} s (medium) "
         f"or {settings.source_down_after_secs} s (high)."),
        ("coverage.issue", "Coverage issue", "coverage", "critical",
         "A coverage issue of medium severity or more that no maintenance window suppresses."),
        ("objective.breach", "Objective breached", "objective", "critical",
         "An objective is in breach; resolves when it is ok again."),
        ("remediation.overdue", "Remediation overdue", "remediation", "critical",
         "An open, in-progress or blocked remediation task is past its due time."),
    )
    return [{"ruleId": rid, "name": name, "kind": kind, "enabled": settings.enabled, "severity": sev,
             "cooldownSecs": settings.cooldown_secs, "description": desc} for rid, name, kind, sev, desc in table]


def _labels(labels: dict | None) -> dict:
    """§5.3: at most 80 keys, values at most 500 chars, all text value-redacted."""
    out: dict = {}
    if not isinstance(labels, dict):
        return out
    for key, value in labels.items():
        if len(out) >= 80:
            break
        if value is None or value == "":
            continue
        key = str(key)[:80]
        if isinstance(value, bool) or (isinstance(value, (int, float)) and value == value):
            out[key] = value
        else:
            out[key] = _text(value, 500)
    return out


def clean_context(context: dict | None) -> dict:
    out: dict = {}
    if not context:
        return out
    for key in CONTEXT_KEYS:
        value = context.get(key)
        if value is not None and value != "":
            out[key] = _text(value, 1024)
    if isinstance(context.get("monitored"), bool):
        out["monitored"] = context["monitored"]
    return out


def alert_item(record: dict) -> dict:
    """The list/payload shape (§16.3): internal `_` keys dropped, times in display format."""
    out = {k: v for k, v in record.items() if not k.startswith("_") and v is not None}
    for key in TIME_FIELDS:
        if out.get(key):
            out[key] = display_time(out[key])
        else:
            out.pop(key, None)
    out.setdefault("labels", {})
    out.setdefault("sourceSummary", "")
    return out


@functools.lru_cache(maxsize=4 * MAX_ALERTS)  # incident and agent alerts are refreshed with every event of theirs
def alert_id_for(dedupe_key: str) -> str:
    return hash_id("alt", [dedupe_key])


def reason_key(reason: str) -> str:
    reason = (reason or "rejected").strip().lower()
    return re.sub(r"[^a-z0-9]+", "-", reason).strip("-")[:80] or "rejected"


class AlertBook(Book):
    """Alerts by id, at most 2000 (resolved ones are dropped first)."""

    table_name = "alerts"
    id_field = "alertId"
    max_records = MAX_ALERTS

    def __init__(self, engine, settings: AlertSettings | None = None):
        super().__init__()
        self.engine = engine
        self.settings = settings or AlertSettings.from_env(engine)
        self._opened_sent: dict[str, int] = {}  # alertId → last `opened` notification (survives eviction)

    # ---- reads -------------------------------------------------------------------------------
    def active(self) -> list[dict]:
        return [r for r in self.records.values() if r.get("status") in ACTIVE]

    def by_dedupe_key(self, dedupe_key: str) -> dict | None:
        return self.records.get(alert_id_for(dedupe_key))

    def rules(self) -> list[dict]:
        return rules(self.settings)

    @staticmethod
    def item(record: dict) -> dict:
        return alert_item(record)

    def _trim(self) -> None:
        if len(self.records) <= self.max_records:
            return
        excess = len(self.records) - self.max_records
        order = sorted(self.records.values(),
                       key=lambda r: (r.get("status") in ACTIVE, r.get("updatedAt") or 0))
        for record in order[:excess]:
            self.remove(record["alertId"])

    # ---- rule entry points -------------------------------------------------------------------
    def upsert(self, *, rule_id: str, kind: str, dedupe_key: str, severity: str, title: str, description: str,
               source_summary: str = "", context: dict | None = None, labels: dict | None = None,
               increment: bool = True, now: int | None = None) -> dict | None:
        """Raise (or refresh) the alert for `dedupe_key`; None when alerting is off or maintenance
        suppresses it (an active alert for the key is then resolved, §19)."""
        if not self.settings.enabled:
            return None
        now = now or now_ms()
        ctx = clean_context(context)
        alert_id = alert_id_for(dedupe_key)
        record = self.records.get(alert_id)
        window = self._suppressing_window({**ctx, "dedupeKey": dedupe_key, "alertId": alert_id}, kind, now)
        if window is not None:
            if record is not None and record.get("status") in ACTIVE:
                self._resolve(record, SUPPRESSED_NOTE, now, force_note=True,
                              extra={"maintenanceWindowId": window.get("windowId")} if isinstance(window, dict) else None)
            return None
        severity = severity if severity in SEVERITIES else "medium"
        action = None
        if record is None:
            record = {
                "alertId": alert_id, "dedupeKey": dedupe_key, "ruleId": rule_id, "kind": kind, "status": "open",
                "severity": severity, "firstSeenAt": now, "lastSeenAt": now, "updatedAt": now,
                "occurrenceCount": 1, "labels": {},
            }
            action = "opened"
        else:
            previous, previous_severity = record.get("status"), record.get("severity", "info")
            silenced_until = record.get("silencedUntil") or 0
            if previous == "acknowledged":
                status = "acknowledged"
            elif silenced_until > now:
                status = "silenced"
            else:
                status = "open"
                record.pop("silencedUntil", None)
                if previous == "resolved" or previous == "silenced":
                    action = "reopened"
                elif severity_rank(severity) > severity_rank(previous_severity):
                    action = "reopened"
            if previous == "resolved":
                record.pop("resolvedAt", None)
                record.pop("acknowledgedAt", None)
                if record.pop("_noteAuto", False):
                    record.pop("note", None)
                record.pop("maintenanceWindowId", None)
            record["status"] = status
            if severity_rank(severity) > severity_rank(previous_severity):
                record["severity"] = severity
            if increment:
                record["occurrenceCount"] = int(record.get("occurrenceCount") or 0) + 1
            record["lastSeenAt"] = max(record.get("lastSeenAt") or 0, now)
            record["updatedAt"] = now
        record["ruleId"], record["kind"] = rule_id, kind
        record["title"] = _text(title, 240)
        record["description"] = _text(description, 1000)
        record["sourceSummary"] = _text(source_summary, 500)
        for key, value in ctx.items():
            record[key] = value
        if labels:
            record["labels"] = _labels({**record.get("labels", {}), **labels})
        self._apply_owner(record, (context or {}).get("owner"), (context or {}).get("team"))
        self.put(record)
        if action:
            self._notify(record, action, now)
        return record

    def resolve(self, dedupe_key: str, note: str, *, now: int | None = None) -> dict | None:
        """Resolve the active alert for `dedupe_key` (automatic recovery); None when there is none."""
        record = self.by_dedupe_key(dedupe_key)
        if record is None or record.get("status") not in ACTIVE:
            return None
        self._resolve(record, note, now or now_ms(), force_note=note == SUPPRESSED_NOTE)
        return record

    def resolve_where(self, predicate: Callable[[dict], bool], note: str, *, now: int | None = None) -> list[dict]:
        now = now or now_ms()
        resolved = []
        for record in list(self.records.values()):
            if record.get("status") in ACTIVE and predicate(record):
                self._resolve(record, note, now, force_note=note == SUPPRESSED_NOTE)
                resolved.append(record)
        return resolved

    def expire_silences(self, *, now: int | None = None) -> list[dict]:
        """An expired silence returns to `open` (with a `reopened` notification)."""
        now = now or now_ms()
        reopened = []
        for record in list(self.records.values()):
            if record.get("status") == "silenced" and (record.get("silencedUntil") or 0) <= now:
                record["status"] = "open"
                record.pop("silencedUntil", None)
                record["updatedAt"] = now
                self.touch(record)
                self._notify(record, "reopened", now)
                reopened.append(record)
        return reopened

    # ---- management --------------------------------------------------------------------------
    def update(self, alert_id: str, *, status: str | None = None, owner: object = None, note: object = None,
               silence_minutes: object = None, actor: dict | None = None, now: int | None = None,
               audit: bool = True) -> dict | None:
        """`PUT /alerts/:alertId` (§16.3); None for an unknown id."""
        record = self.records.get(alert_id)
        if record is None:
            return None
        now = now or now_ms()
        previous = record.get("status")
        action = None
        if status == "acknowledged":
            record["status"] = "acknowledged"
            record["acknowledgedAt"] = now
            record.pop("silencedUntil", None)
            if previous == "resolved":
                record.pop("resolvedAt", None)
        elif status == "silenced":
            minutes = _clamp(silence_minutes, 5, 10080, 60)
            record["status"] = "silenced"
            record["silencedUntil"] = now + minutes * 60_000
            if previous == "resolved":
                record.pop("resolvedAt", None)
        elif status == "resolved":
            if previous != "resolved":
                record["status"] = "resolved"
                record["resolvedAt"] = now
                record.pop("silencedUntil", None)
                action = "resolved"
        elif status == "open":
            record["status"] = "open"
            for key in ("acknowledgedAt", "resolvedAt", "silencedUntil"):
                record.pop(key, None)
            if previous == "resolved":
                action = "reopened"
        if owner is not None:
            record["owner"] = _text(owner, 120)
            record["_ownerManual"] = True
        if note is not None:
            record["note"] = _text(note, 2000)
            record.pop("_noteAuto", None)
        record["updatedAt"] = now
        self.touch(record)
        if action:
            self._notify(record, action, now)
        if audit:
            self._audit(record, previous, actor)
        return record

    def _audit(self, record: dict, previous: str | None, actor: dict | None) -> None:
        audit = getattr(self.engine, "audit", None)
        if audit is None:
            return
        details = {"alertId": record["alertId"], "ruleId": record.get("ruleId"), "kind": record.get("kind"),
                   "previousStatus": previous, "status": record.get("status"), "owner": record.get("owner"),
                   "note": record.get("note"), "silencedUntil": display_time(record.get("silencedUntil")) or None}
        for key in ("incidentId", "eventId", "workspacePath", "agentId", "collectorId", "sourceId"):
            if record.get(key):
                details[key] = record[key]
        for key in ("taskId", "objectiveId", "issueId"):
            if record.get("labels", {}).get(key):
                details[key] = record["labels"][key]
        audit.record("alert.updated", "alert", record["alertId"],
                     f"alert {record.get('title') or record['alertId']}: {previous} → {record.get('status')}",
                     actor=actor, details=details)

    # ---- internals ---------------------------------------------------------------------------
    def _resolve(self, record: dict, note: str, now: int, *, force_note: bool = False, extra: dict | None = None) -> None:
        record["status"] = "resolved"
        record["resolvedAt"] = now
        record["updatedAt"] = now
        if force_note or not record.get("note"):
            record["note"] = _text(note, 2000)
            record["_noteAuto"] = True
        if extra:
            record.update({k: v for k, v in extra.items() if v})
        self.touch(record)
        self._notify(record, "resolved", now)

    def _suppressing_window(self, context: dict, kind: str, now: int) -> dict | None:
        maintenance = getattr(self.engine, "maintenance", None)
        check = getattr(maintenance, "suppressing_window", None)
        if check is None:
            return None
        try:
            return check(context, kind, now)
        except Exception:
            log.exception("maintenance check failed; not suppressing")
            return None

    def _apply_owner(self, record: dict, given_owner: object = None, given_team: object = None) -> None:
        """Owner and team: given by the rule (coverage), else agent metadata, else the source record;
        an owner set through `PUT /alerts/:id` is kept."""
        if record.get("_ownerManual"):
            return
        owner, team = _text(given_owner, 120), _text(given_team, 120)
        if owner or team:
            record["owner"], record["team"] = owner or record.get("owner", ""), team or record.get("team", "")
            return
        lookup = getattr(self.engine, "owner_of", None)
        if callable(lookup):
            try:
                found = lookup(record.get("workspacePath", ""), record.get("agentId", ""), record.get("sourceId", ""))
                if found:
                    owner, team = found[0] or "", found[1] or ""
            except Exception:
                log.exception("owner lookup failed")
        if not owner and not team and record.get("sourceId"):
            sources = getattr(self.engine, "sources", None)
            source = sources.get(record["sourceId"]) if sources is not None else None
            if source:
                owner, team = source.get("owner") or "", source.get("team") or ""
        if owner:
            record["owner"] = _text(owner, 120)
        if team:
            record["team"] = _text(team, 120)

    def _notify(self, record: dict, action: str, now: int) -> None:
        if action == "opened":
            last = self._opened_sent.get(record["alertId"]) or record.get("_lastOpenedAt") or 0
            if last and now - last < self.settings.cooldown_secs * 1000:
                return
            record["_lastOpenedAt"] = now
            self._opened_sent[record["alertId"]] = now
            if len(self._opened_sent) > 4 * MAX_ALERTS:
                horizon = now - self.settings.cooldown_secs * 1000
                self._opened_sent = {k: v for k, v in self._opened_sent.items() if v >= horizon}
        record["lastNotificationAt"] = now
        notifier = getattr(self.engine, "notifications", None)
        if notifier is None:
            return
        try:
            notifier.notify(record, action)
        except Exception:
            log.exception("notification enqueue failed for %s", record.get("alertId"))


# ---- collector rules ---------------------------------------------------------------------------
def _collector_context(hb: dict) -> dict:
    return {"collectorId": hb.get("collectorId"), "nodeName": hb.get("nodeName"), "sourceId": hb.get("sourceId"),
            "workspacePath": hb.get("workspacePath")}


def on_heartbeat(book: AlertBook, hb: dict) -> None:
    """`collector.quality` from each heartbeat; a heartbeat also ends `collector.availability`,
    and an `error` heartbeat is a failed check-in of its source (§16.2)."""
    cid = hb.get("collectorId") or "unknown-collector"
    now = hb.get("receivedAt") or now_ms()
    drops = (hb.get("droppedEvents") or 0) + (hb.get("outputDropped") or 0)
    errors = hb.get("errorCount") or 0
    status = hb.get("status") or "ok"
    book.resolve(f"collector:{cid}:availability", "heartbeat received", now=now)
    if status != "ok" or drops or errors:
        severity = "high" if status == "error" or errors > 0 or drops > 0 else "medium"
        parts = [f"status {status}"]
        if hb.get("droppedEvents"):
            parts.append(f"{hb['droppedEvents']:g} dropped events")
        if hb.get("outputDropped"):
            parts.append(f"{hb['outputDropped']:g} output drops")
        if errors:
            parts.append(f"{errors:g} errors")
        book.upsert(rule_id="collector.quality", kind="collector", dedupe_key=f"collector:{cid}:quality",
                    severity=severity, title=f"Collector {cid} degraded",
                    description="Heartbeat reports " + ", ".join(parts) + (f": {hb['message']}" if hb.get("message") else ""),
                    source_summary=f"node {hb.get('nodeName') or '-'} · version {hb.get('version') or '-'}",
                    context=_collector_context(hb),
                    labels={"status": status, "droppedEvents": hb.get("droppedEvents") or 0,
                            "outputDropped": hb.get("outputDropped") or 0, "errorCount": errors}, now=now)
    else:
        book.resolve(f"collector:{cid}:quality", "collector heartbeat is clean", now=now)
    if status == "error":
        target = hb.get("sourceId") or cid
        message = hb.get("message") or "collector heartbeat reports error"
        _raise_check_in_error(book, target, message, _collector_context(hb), signal="heartbeat",
                              name=f"collector {cid}", now=now)
    else:
        key = f"source:{hb.get('sourceId') or cid}:check-in-error"
        existing = book.by_dedupe_key(key)
        if existing is not None and existing.get("labels", {}).get("signal") == "heartbeat":
            book.resolve(key, "collector heartbeat is ok", now=now)


def _age_severity(age_secs: float, stale: int, down: int, *, stale_sev: str, down_sev: str) -> str | None:
    if age_secs >= down:
        return down_sev
    if age_secs >= stale:
        return stale_sev
    return None


async def evaluate_availability(engine, *, now: int | None = None) -> None:
    """The 30 s timer: collector and source availability, and expired silences."""
    book: AlertBook | None = getattr(engine, "alerts", None)
    if book is None:
        return
    now = now or now_ms()
    settings = book.settings
    book.expire_silences(now=now)
    for cid, hb in list(getattr(engine.collectors, "latest", {}).items()):
        age = (now - (hb.get("receivedAt") or now)) / 1000
        key = f"collector:{cid}:availability"
        severity = _age_severity(age, settings.collector_stale_after_secs, settings.collector_down_after_secs,
                                 stale_sev="high", down_sev="critical")
        if severity is None:
            book.resolve(key, "collector heartbeat is current", now=now)
            continue
        state = "down" if severity == "critical" else "stale"
        book.upsert(rule_id="collector.availability", kind="collector", dedupe_key=key, severity=severity,
                    title=f"Collector {cid} {state}", description=f"No heartbeat from collector {cid} for {int(age)} s",
                    source_summary=f"last heartbeat {display_time(hb.get('receivedAt'))}",
                    context=_collector_context(hb), labels={"state": state, "ageSecs": int(age)},
                    increment=False, now=now)
    for record in getattr(engine.sources, "all", lambda: [])():
        sid = record.get("sourceId")
        key = f"source:{sid}:availability"
        last = max(record.get("lastEventAt") or 0, record.get("lastHeartbeatAt") or 0)
        if not record.get("enabled", True):
            book.resolve(key, "source disabled", now=now)
            continue
        if not last:
            continue
        age = (now - last) / 1000
        severity = _age_severity(age, settings.source_stale_after_secs, settings.source_down_after_secs,
                                 stale_sev="medium", down_sev="high")
        if severity is None:
            book.resolve(key, "source is signalling again", now=now)
            continue
        book.upsert(rule_id="source.availability", kind="source", dedupe_key=key, severity=severity,
                    title=f"Source {record.get('name') or sid} silent",
                    description=f"No accepted event or heartbeat from source {record.get('name') or sid} for {int(age)} s",
                    source_summary=f"last signal {display_time(last)}",
                    context={"sourceId": sid, "collectorId": record.get("collectorId"),
                             "workspacePath": record.get("workspacePath")},
                    labels={"ageSecs": int(age), "sourceType": record.get("type")}, increment=False, now=now)


# ---- source rules ------------------------------------------------------------------------------
def rejection_severity(reason: str) -> str:
    lowered = (reason or "").lower()
    if lowered.startswith("filtered:"):
        return "low"
    if "token" in lowered or "does not match" in lowered:
        return "high"
    return "medium"  # disabled, unparseable, unsupported and anything else


def on_rejection(book: AlertBook, record: dict | None, creds: dict, reason: str) -> None:
    creds = creds or {}
    target = ((record or {}).get("sourceId") or creds.get("collectorId") or creds.get("sourceName")
              or creds.get("sourceId") or "unknown")
    key = reason_key(reason)
    name = (record or {}).get("name") or creds.get("sourceName") or target
    book.upsert(rule_id="source.rejected_ingest", kind="source", dedupe_key=f"source:{target}:{key}",
                severity=rejection_severity(reason), title=f"Rejected ingest from {name}: {reason}",
                description=f"A producer request for source {name} was rejected: {reason}",
                source_summary=f"rejected events on source: {(record or {}).get('rejectedEvents', 0)}",
                context={"sourceId": (record or {}).get("sourceId"),
                         "collectorId": (record or {}).get("collectorId") or creds.get("collectorId"),
                         "workspacePath": (record or {}).get("workspacePath") or creds.get("workspacePath"),
                         "nodeName": creds.get("nodeName")},
                labels={"reason": reason, "reasonKey": key})


def _raise_check_in_error(book: AlertBook, target: str, message: str, context: dict, *, signal: str,
                          name: str = "", now: int | None = None) -> None:
    lowered = message.lower()
    severity = "high" if any(word in lowered for word in ("drop", "fail", "error")) else "medium"
    book.upsert(rule_id="source.check_in_error", kind="source", dedupe_key=f"source:{target}:check-in-error",
                severity=severity, title=f"Source {name or target} reports an error",
                description=message, source_summary=f"reported by {signal}", context=context,
                labels={"signal": signal}, now=now)


def on_check_in(book: AlertBook, record: dict | None, body: dict, status: str) -> None:
    """`/sources/check-in`: `error` raises `source.check_in_error`, `ok` resolves it."""
    body = body if isinstance(body, dict) else {}
    target = ((record or {}).get("sourceId") or _text(body.get("sourceId"), 160) or _text(body.get("sourceName"), 160)
              or _text(body.get("collectorId"), 160) or "unknown")
    key = f"source:{target}:check-in-error"
    if status == "error":
        message = _text(body.get("message"), 1000) or "check-in reported error"
        _raise_check_in_error(book, target, message,
                              {"sourceId": (record or {}).get("sourceId"),
                               "collectorId": (record or {}).get("collectorId") or body.get("collectorId"),
                               "workspacePath": (record or {}).get("workspacePath") or body.get("workspacePath")},
                              signal="check-in", name=(record or {}).get("name") or _text(body.get("sourceName"), 160))
    else:
        book.resolve(key, "source check-in ok")


def setup(engine) -> AlertBook:
    book = AlertBook(engine, AlertSettings.from_env(engine))
    engine.alerts = book
    engine.register_book(book)
    engine.collectors.listeners.append(lambda hb: _guard(on_heartbeat, book, hb))
    engine.sources.rejection_listeners.append(lambda record, creds, reason: _guard(on_rejection, book, record, creds, reason))
    engine.check_in = lambda record, body, status: _guard(on_check_in, book, record, body, status)

    async def availability() -> None:
        await evaluate_availability(engine)

    engine.register_timer(AVAILABILITY_TIMER, AVAILABILITY_INTERVAL_SECS, availability)
    return book


def _guard(fn, *args) -> None:
    """Alert rules run inside producer requests: a failure is logged, never raised into ingest."""
    try:
        fn(*args)
    except Exception:
        log.exception("alert rule %s failed", getattr(fn, "__name__", fn))


def attach(services) -> None:
    """Wire the parts that live on the API services rather than the engine (check-ins). Idempotent."""
    check_in = getattr(services.ops, "check_in", None)
    listeners = getattr(services, "check_in_listeners", None)
    if check_in is not None and listeners is not None and check_in not in listeners:
        listeners.append(check_in)
    notifications = getattr(services.ops, "notifications", None)
    if notifications is not None and hasattr(notifications, "attach"):
        notifications.attach(services)
