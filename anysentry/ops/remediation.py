"""Remediation tasks and next actions (SPEC §21): what should someone do about it, by when?

Tasks are generated from unresolved incidents, active alerts and actionable coverage issues (never
from `remediation.overdue` or `coverage.issue` alerts, so tasks cannot breed tasks), merged with
what people already did to them, scanned for overdue work, and ranked into next actions."""

from __future__ import annotations

import logging
import os
import re

from anysentry.events.ids import hash_id
from anysentry.events.redact import redact_text
from anysentry.events.timefmt import display_time, iso_time, now_ms, parse_time
from anysentry.ops.book import Book
from anysentry.ops.fields import text as clean
from anysentry.ops.maintenance import ACTIVE_ALERT_STATUSES
from anysentry.store.window import TimeWindow

log = logging.getLogger("anysentry.ops.remediation")

STATUSES = ("open", "in_progress", "blocked", "done", "dismissed")
ACTIVE = ("open", "in_progress", "blocked")
CLOSED = ("done", "dismissed")
SOURCE_TYPES = ("incident", "alert", "coverage")
SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
DUE_HOURS = {"critical": 4, "high": 12, "medium": 36, "low": 72, "info": 168}
RULE_ID = "remediation.overdue"
NO_TASK_RULES = ("remediation.overdue", "coverage.issue")  # no recursion (§21.1)
GENERATION_WINDOW_MS = 30 * 86_400_000
MAX_TASKS = 2000
PLAN_SCHEMA = "anysentry.progressive.next_action_plan.v1"
RESOLVED_NOTE = "remediation no longer overdue"
CLOSED_NOTE = "remediation closed"

STEPS: dict[str, list[tuple[str, str, str]]] = {
    "source": [
        ("inspect_source", "Inspect the source", "Check the source status, last error and the producer behind it."),
        ("verify_auth", "Verify authentication", "Confirm the producer sends the right source id and a valid ingest token."),
        ("send_signal", "Send a signal", "Send an event or check-in and confirm it is accepted."),
    ],
    "collector": [
        ("inspect_collector", "Inspect the collector", "Check the collector pod, its node and its last heartbeat."),
        ("check_ingest", "Check ingest", "Confirm the collector reaches the API and its events are accepted."),
        ("verify_recovery", "Verify recovery", "Watch for fresh heartbeats and events from the collector."),
    ],
    "policy": [
        ("review_evidence", "Review the evidence", "Read the events and decisions behind this task."),
        ("simulate_policy", "Simulate the policy change", "Replay recent events against the proposed policy."),
        ("apply_or_note", "Apply or record the decision", "Apply the policy change, or note why none is needed."),
    ],
    "credential": [
        ("scope_secret", "Scope the secret", "Find where the credential is used and who depends on it."),
        ("rotate_secret", "Rotate the secret", "Issue a new credential and revoke the old one."),
        ("verify_agent", "Verify the agent", "Confirm the agent and its producers work with the new credential."),
    ],
    "ownership": [
        ("assign_owner", "Assign an owner", "Name the person or team accountable for this asset."),
        ("check_coverage", "Check coverage", "Confirm the asset is observed by a live collector or source."),
        ("close_loop", "Close the loop", "Record the outcome and close the task."),
    ],
    "investigate": [
        ("review_evidence", "Review the evidence", "Read the events, decisions and timeline behind this task."),
        ("scope_impact", "Scope the impact", "Work out which agents, workspaces and data are affected."),
        ("mitigate", "Mitigate", "Contain the agent or fix the cause, then record what was done."),
    ],
}
STEPS["network"] = STEPS["investigate"]
STEPS["file"] = STEPS["investigate"]

RECOMMENDED = {
    "source": "Check the ingestion source and its producer, fix authentication, and confirm a fresh accepted signal.",
    "collector": "Restore the collector on its node and confirm heartbeats and events arrive again.",
    "policy": "Review the evidence and decide on a policy change; simulate it before applying.",
    "credential": "Rotate the affected credential and verify the agent and its producers still work.",
    "ownership": "Assign an owner and confirm the asset is covered.",
    "network": "Review the network activity, block unexpected destinations and confirm the agent's egress is expected.",
    "file": "Review the file access, restrict the agent's file permissions and confirm no data left the workspace.",
    "investigate": "Review the evidence, scope the impact and mitigate.",
}

_KEYWORDS: tuple[tuple[str, re.Pattern], ...] = tuple((kind, re.compile(pattern, re.I)) for kind, pattern in (
    ("source", r"\b(source|token)s?\b"),
    ("collector", r"\b(collector|heartbeat|daemonset|forwarder)s?\b"),
    ("policy", r"\bpolic(y|ies)\b"),
    ("credential", r"\b(credential|secret)s?\b"),
    ("network", r"\b(egress|dns)\b"),
    ("file", r"\bfiles?\b"),
    ("ownership", r"\b(owner|ownership|coverage)s?\b"),
))


def action_kind(*, alert_kind: str = "", issue_type: str = "", title: str = "", description: str = "") -> str:
    """§21.2."""
    if alert_kind == "collector":
        return "collector"
    if alert_kind == "source":
        return "source"
    if issue_type == "source_token_rotation_due":
        return "credential"
    text = f"{title} {description}"
    for kind, pattern in _KEYWORDS:
        if pattern.search(text):
            return kind
    return "investigate"


def scan_secs() -> int:
    try:
        return max(5, min(86_400, int(os.environ.get("ANYSENTRY_REMEDIATION_OVERDUE_SCAN_SECS", 60))))
    except ValueError:
        return 60


def _ms(value: object) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value:
        return parse_time(value, 0)
    return 0


def _severity(value: object) -> str:
    return value if value in SEVERITY_RANK else "medium"


class RemediationBook(Book):
    table_name = "remediations"
    id_field = "taskId"
    max_records = MAX_TASKS

    def __init__(self, engine):
        super().__init__()
        self.engine = engine
        self.scan_secs = scan_secs()

    def _trim(self) -> None:
        """At most 2000 tasks: closed ones go first, oldest first."""
        if len(self.records) <= self.max_records:
            return
        excess = len(self.records) - self.max_records
        order = sorted(self.records.values(), key=lambda t: (t.get("status") in ACTIVE, t.get("updatedAt") or 0))
        for task in order[:excess]:
            self.remove(task["taskId"])

    # ---- generation (§21.1) ------------------------------------------------------------------
    async def origins(self, now: int) -> list[dict]:
        """Every origin a task should exist for: (sourceType, sourceId, fields)."""
        since = now - GENERATION_WINDOW_MS
        found: list[dict] = []
        incidents = getattr(self.engine, "incidents", None)
        for incident in incidents.values() if incidents is not None else []:
            if incident.get("status") == "resolved" or not incident.get("incidentId"):
                continue
            if _ms(incident.get("updatedAt") or incident.get("lastEventAt") or now) < since:
                continue
            found.append({
                "sourceType": "incident", "sourceId": incident["incidentId"],
                "severity": _severity(incident.get("severity")), "originStatus": incident.get("status"),
                "title": incident.get("title") or f"Incident {incident['incidentId']}",
                "description": incident.get("description") or "",
                "actionKind": action_kind(title=incident.get("title") or "", description=incident.get("description") or ""),
                "workspacePath": incident.get("workspacePath") or "", "agentId": incident.get("agentId") or "",
                "collectorId": incident.get("collectorId") or "", "ingestionSourceId": incident.get("sourceId") or "",
                "incidentId": incident["incidentId"], "eventId": incident.get("lastEventId") or incident.get("eventId") or "",
                "traceId": incident.get("traceId") or "", "labels": {},
            })
        alerts = getattr(self.engine, "alerts", None)
        for alert in alerts.values() if alerts is not None else []:
            if alert.get("status") in ("resolved", "silenced") or alert.get("ruleId") in NO_TASK_RULES:
                continue
            if not alert.get("alertId") or _ms(alert.get("lastSeenAt") or alert.get("updatedAt") or now) < since:
                continue
            labels = {k: str(v) for k, v in (alert.get("labels") or {}).items() if k in ("objectiveId", "issueId", "type") and v}
            found.append({
                "sourceType": "alert", "sourceId": alert["alertId"],
                "severity": _severity(alert.get("severity")), "originStatus": alert.get("status"),
                "title": alert.get("title") or alert.get("ruleId") or "Alert", "description": alert.get("description") or "",
                "actionKind": action_kind(alert_kind=alert.get("kind") or "", title=alert.get("title") or "",
                                          description=alert.get("description") or ""),
                "workspacePath": alert.get("workspacePath") or "", "agentId": alert.get("agentId") or "",
                "collectorId": alert.get("collectorId") or "", "ingestionSourceId": alert.get("sourceId") or "",
                "nodeName": alert.get("nodeName") or "", "incidentId": alert.get("incidentId") or "",
                "alertId": alert["alertId"], "eventId": alert.get("eventId") or "", "traceId": alert.get("traceId") or "",
                "labels": labels,
            })
        coverage = getattr(self.engine, "coverage", None)
        if coverage is not None:
            snap = await coverage.compute(TimeWindow.from_body({"timeType": "last_30d"}, now=now), now=now)
            for issue in snap.issues:
                if issue.get("suppressedByMaintenance"):
                    continue
                found.append({
                    "sourceType": "coverage", "sourceId": issue["issueId"], "severity": _severity(issue["severity"]),
                    "originStatus": "open", "title": issue["title"], "description": issue["description"],
                    "recommendedAction": issue.get("recommendedAction") or "",
                    "actionKind": action_kind(issue_type=issue["type"], title=issue["title"], description=issue["description"]),
                    "workspacePath": issue.get("workspacePath") or "", "agentId": issue.get("agentId") or "",
                    "collectorId": issue.get("collectorId") or "", "ingestionSourceId": issue.get("sourceId") or "",
                    "nodeName": issue.get("nodeName") or "", "eventId": issue.get("evidenceEventId") or "",
                    "labels": {"issueId": issue["issueId"], "type": issue["type"]},
                })
        return found

    async def refresh(self, now: int | None = None) -> None:
        now = now or now_ms()
        try:
            origins = await self.origins(now)
        except Exception:
            log.exception("remediation origins unavailable")
            return
        for origin in origins:
            self._merge(origin, now)

    def _merge(self, origin: dict, now: int) -> None:
        task_id = hash_id("rem", [origin["sourceType"], origin["sourceId"]])
        existing = self.records.get(task_id)
        if existing is not None and existing.get("status") in CLOSED:
            return  # done and dismissed tasks are never regenerated or reopened
        kind = origin["actionKind"]
        fields = {
            "sourceType": origin["sourceType"], "sourceId": origin["sourceId"], "severity": origin["severity"],
            "actionKind": kind, "title": redact_text(origin["title"])[:300],
            "description": redact_text(origin["description"])[:2000],
            "recommendedAction": origin.get("recommendedAction") or RECOMMENDED[kind],
            "labels": dict(origin.get("labels") or {}),
        }
        for key in ("agentId", "workspacePath", "collectorId", "ingestionSourceId", "nodeName", "incidentId", "alertId",
                    "eventId", "traceId"):
            if origin.get(key):
                fields[key] = origin[key]
        if existing is None:
            task = {"taskId": task_id, **fields,
                    "status": "in_progress" if origin.get("originStatus") == "acknowledged" else "open",
                    "createdAt": now, "updatedAt": now,
                    "dueAt": now + DUE_HOURS[origin["severity"]] * 3_600_000,
                    "steps": [{"stepId": s, "title": t, "detail": d, "done": False} for s, t, d in STEPS[kind]]}
            self.put(task)
            return
        done = {s["stepId"] for s in existing.get("steps", []) if s.get("done")}
        steps = [{"stepId": s, "title": t, "detail": d, "done": s in done} for s, t, d in STEPS[kind]]
        changed = steps != existing.get("steps") or any(existing.get(k) != v for k, v in fields.items())
        if changed:
            existing.update(fields)
            existing["steps"] = steps
            existing["updatedAt"] = max(now, existing.get("updatedAt", 0))
            self.put(existing)

    # ---- updates (§21.3) ---------------------------------------------------------------------
    def update(self, task_id: str, body: dict, *, now: int | None = None) -> dict | None:
        task = self.records.get(task_id)
        if task is None:
            return None
        now = now or now_ms()
        status = clean(body.get("status")).lower()
        if status in STATUSES and status != task.get("status"):
            task["status"] = status
            if status in CLOSED:
                task["completedAt"] = now
            else:
                task.pop("completedAt", None)
        if "owner" in body:
            task["owner"] = redact_text(clean(body.get("owner"), 120))
        if "note" in body:
            task["note"] = redact_text(clean(body.get("note"), 2000))
        if "dueAt" in body:
            due = body.get("dueAt")
            if due in (None, ""):
                task.pop("dueAt", None)
            else:
                parsed = parse_time(due, -1)
                if parsed >= 0:
                    task["dueAt"] = parsed
        if isinstance(body.get("completedStepIds"), list):
            wanted = {str(s) for s in body["completedStepIds"]}
            for step in task.get("steps", []):
                step["done"] = step["stepId"] in wanted
        task["updatedAt"] = max(now, task.get("updatedAt", 0) + 1)
        self.put(task)
        self._sync_alert(task, now)
        self._reschedule(now)
        return task

    # ---- overdue (§21.4) ---------------------------------------------------------------------
    @staticmethod
    def is_overdue(task: dict, now: int) -> bool:
        return bool(task.get("dueAt")) and task["dueAt"] < now and task.get("status") in ACTIVE

    def _context(self, task: dict) -> dict:
        context = {k: task.get(k) or "" for k in ("workspacePath", "agentId", "collectorId", "nodeName", "incidentId",
                                                   "eventId", "traceId")}
        context["sourceId"] = task.get("ingestionSourceId") or ""
        if task.get("owner"):
            context["owner"] = task["owner"]
        return context

    def _sync_alert(self, task: dict, now: int) -> None:
        alerts = getattr(self.engine, "alerts", None)
        if alerts is None:
            return
        dedupe = f"remediation:{task['taskId']}:overdue"
        existing = alerts.get(hash_id("alt", [dedupe]))
        active = existing is not None and existing.get("status") in ACTIVE_ALERT_STATUSES
        try:
            if self.is_overdue(task, now):
                # the alerts book consults maintenance (§19) and resolves a suppressed one itself
                context = self._context(task)
                labels = {"taskId": task["taskId"]}
                for key in ("objectiveId", "issueId"):
                    if (task.get("labels") or {}).get(key):
                        labels[key] = task["labels"][key]
                alerts.upsert(rule_id=RULE_ID, kind="remediation", dedupe_key=dedupe, severity=task["severity"],
                              title=f"Remediation overdue: {task['title']}",
                              description=f"Task {task['taskId']} ({task['status']}) was due at {display_time(task['dueAt'])}.",
                              source_summary=f"remediation · {task['actionKind']}", context=context, labels=labels,
                              increment=False, now=now)
            elif active:
                alerts.resolve(dedupe, CLOSED_NOTE if task.get("status") in CLOSED else RESOLVED_NOTE, now=now)
        except Exception:
            log.exception("overdue alert for %s failed", task.get("taskId"))

    async def scan(self, now: int | None = None) -> None:
        """Timer `remediation.overdue`: regenerate, then raise or resolve overdue alerts."""
        now = now or now_ms()
        await self.refresh(now)
        for task in list(self.records.values()):
            self._sync_alert(task, now)
        self._reschedule(now)

    def _reschedule(self, now: int) -> None:
        """Next scan after min(nextDueAt − now + 250 ms, the scan interval)."""
        upcoming = [t["dueAt"] for t in self.records.values() if t.get("status") in ACTIVE and (t.get("dueAt") or 0) >= now]
        interval = float(self.scan_secs)
        if upcoming:
            interval = max(0.25, min(interval, (min(upcoming) - now + 250) / 1000))
        timer = getattr(self.engine, "timers", {}).get(RULE_ID)
        if timer is not None:
            timer.interval = interval

    # ---- list (§21.5) ------------------------------------------------------------------------
    def item(self, task: dict, now: int | None = None) -> dict:
        now = now or now_ms()
        out = {k: v for k, v in task.items()}
        out["steps"] = [dict(s) for s in task.get("steps", [])]
        out["labels"] = dict(task.get("labels") or {})
        out["overdue"] = self.is_overdue(task, now)
        for key in ("createdAt", "updatedAt", "dueAt", "completedAt"):
            if out.get(key):
                out[key] = display_time(out[key])
        return out

    def _select(self, body: dict, now: int) -> tuple[list[dict], list[dict], list[dict]]:
        """(pinned, filtered, scope) tasks for a list or plan query."""
        text = lambda key, limit=1024: clean(body.get(key), limit)  # noqa: E731
        window = TimeWindow.from_body(body, now=now)
        include_backlog = body.get("includeBacklog") is not False and str(body.get("includeBacklog")).lower() != "false"
        pins = {key: text(key, 200) for key in ("taskId", "incidentId", "alertId", "eventId") if text(key, 200)}
        label_pins = {key: text(key, 200) for key in ("objectiveId", "issueId") if text(key, 200)}
        status = text("status").lower()
        status = status if status in (*STATUSES, "active") else ""
        severity = text("severity").lower()
        severity = severity if severity in SEVERITY_RANK else ""
        source_type = text("sourceType").lower()
        source_type = source_type if source_type in SOURCE_TYPES else ""
        kind = text("actionKind").lower()
        kind = kind if kind in STEPS else ""
        owner = text("owner", 120)
        q = text("q", 200).lower()
        scope = {"workspacePath": text("workspacePath"), "agentId": text("agentId"), "collectorId": text("collectorId"),
                 "ingestionSourceId": text("sourceId")}
        scope = {k: v for k, v in scope.items() if v}
        any_pin = bool(pins or label_pins)
        pin_only = any_pin and not (status or severity or source_type or kind or owner or q or scope)

        def pinned_task(task: dict) -> bool:
            labels = task.get("labels") or {}
            return any(task.get(k) == v for k, v in pins.items()) or any(labels.get(k) == v for k, v in label_pins.items())

        def in_window(task: dict) -> bool:
            if include_backlog and task.get("status") in ACTIVE:
                return True
            stamp = task.get("updatedAt") or task.get("createdAt") or 0
            return window.start <= stamp <= window.end

        pinned, rows, scoped = [], [], []
        for task in self.records.values():
            if any_pin and pinned_task(task):
                pinned.append(task)
                continue
            if pin_only or not in_window(task):
                continue
            if any(task.get(k) != v for k, v in scope.items()):
                continue
            scoped.append(task)
            if status == "active" and task.get("status") not in ACTIVE:
                continue
            if status and status != "active" and task.get("status") != status:
                continue
            if severity and task.get("severity") != severity:
                continue
            if source_type and task.get("sourceType") != source_type:
                continue
            if kind and task.get("actionKind") != kind:
                continue
            if owner and task.get("owner") != owner:
                continue
            if q and q not in " ".join(str(task.get(k) or "") for k in (
                    "taskId", "title", "description", "recommendedAction", "owner", "note", "workspacePath", "agentId",
                    "collectorId", "ingestionSourceId", "nodeName", "incidentId", "alertId", "eventId", "actionKind")).lower():
                continue
            rows.append(task)
        return pinned, rows, scoped

    async def list(self, body: dict, *, now: int | None = None) -> dict:
        now = now or now_ms()
        await self.refresh(now)
        pinned, rows, scoped = self._select(body, now)
        order = {s: i for i, s in enumerate(STATUSES)}
        rows.sort(key=lambda t: (order.get(t.get("status"), 9), -SEVERITY_RANK.get(t.get("severity"), 0),
                                 -(t.get("updatedAt") or 0)))
        limit = max(1, min(500, _int(body.get("limit"), 100)))
        everything = [self.item(t, now) for t in pinned + rows]
        summary_base = scoped + [t for t in pinned if t not in scoped]
        summary = {
            "totalTasks": len(summary_base),
            "activeTasks": sum(1 for t in summary_base if t.get("status") in ACTIVE),
            "openTasks": sum(1 for t in summary_base if t.get("status") == "open"),
            "inProgressTasks": sum(1 for t in summary_base if t.get("status") == "in_progress"),
            "blockedTasks": sum(1 for t in summary_base if t.get("status") == "blocked"),
            "doneTasks": sum(1 for t in summary_base if t.get("status") == "done"),
            "dismissedTasks": sum(1 for t in summary_base if t.get("status") == "dismissed"),
            "overdueTasks": sum(1 for t in summary_base if self.is_overdue(t, now)),
            "highPriorityTasks": sum(1 for t in summary_base if t.get("status") in ACTIVE
                                     and t.get("severity") in ("high", "critical")),
            "incidentTasks": sum(1 for t in summary_base if t.get("sourceType") == "incident"),
            "alertTasks": sum(1 for t in summary_base if t.get("sourceType") == "alert"),
            "coverageTasks": sum(1 for t in summary_base if t.get("sourceType") == "coverage"),
        }
        return {"items": everything[:limit], "total": len(everything), "summary": summary, "updateTime": display_time(now)}

    # ---- planNextActions (§21.6) -------------------------------------------------------------
    async def plan_next_actions(self, params: dict, *, now: int | None = None) -> dict:
        now = now or now_ms()
        params = params if isinstance(params, dict) else {}
        await self.refresh(now)
        pinned, rows, _ = self._select(params, now)
        status_given = clean(params.get("status")).lower() in (*STATUSES, "active")
        candidates = [t for t in pinned + rows if status_given or t.get("status") not in CLOSED]
        status_rank = {"open": 0, "blocked": 1, "in_progress": 2, "done": 3, "dismissed": 4}
        candidates.sort(key=lambda t: (-SEVERITY_RANK.get(t.get("severity"), 0), status_rank.get(t.get("status"), 9),
                                       t.get("dueAt") or float("inf"), t.get("title") or ""))
        max_actions = max(1, min(20, _int(params.get("maxActions"), 5)))
        include_done = params.get("includeCompletedSteps") is True or str(params.get("includeCompletedSteps")).lower() == "true"
        actions = [self._action(task, rank, now, include_done) for rank, task in enumerate(candidates[:max_actions], start=1)]
        window = TimeWindow.from_body(params, now=now)
        scope = {"timeType": window.time_type}
        for key in ("workspacePath", "agentId", "collectorId", "sourceId", "owner", "q"):
            scope[key] = clean(params.get(key), 1024)
        return {
            "schemaVersion": PLAN_SCHEMA, "module": "security-center", "operation": "planNextActions",
            "generatedAt": iso_time(now), "scope": scope,
            "summary": {
                "totalCandidates": len(candidates), "returnedActions": len(actions),
                "criticalActions": sum(1 for a in actions if a["severity"] == "critical"),
                "overdueActions": sum(1 for a in actions if a["overdue"]),
                "approvalRequiredActions": sum(1 for a in actions if a["needsApproval"]),
            },
            "actions": actions,
        }

    def _action(self, task: dict, rank: int, now: int, include_done: bool) -> dict:
        severity = task.get("severity") or "medium"
        overdue = self.is_overdue(task, now)
        kind = task.get("actionKind") or "investigate"
        status = task.get("status")
        labels = task.get("labels") or {}
        needs_approval = (severity == "critical" or kind in ("credential", "policy", "network")
                          or (status == "blocked" and (severity == "high" or overdue)))
        if task.get("incidentId"):
            primary_type, primary_id = "incident", task["incidentId"]
        elif task.get("alertId"):
            primary_type, primary_id = "alert", task["alertId"]
        elif task.get("sourceType") == "coverage":
            primary_type, primary_id = "coverage", labels.get("issueId") or task.get("sourceId")
        else:
            primary_type, primary_id = "remediation", task["taskId"]
        if task.get("eventId"):
            hint = {"eventId": task["eventId"]}
        elif task.get("incidentId"):
            hint = {"incidentId": task["incidentId"]}
        elif task.get("alertId"):
            hint = {"alertId": task["alertId"]}
        elif labels.get("objectiveId"):
            hint = {"objectiveId": labels["objectiveId"]}
        elif task.get("sourceType") == "coverage" and labels.get("issueId"):
            hint = {"issueId": labels["issueId"]}
        else:
            hint = {"taskId": task["taskId"]}
        steps = [dict(s) for s in task.get("steps", []) if include_done or not s.get("done")]
        return {
            "actionId": f"act_{rank}_{task['taskId']}", "taskId": task["taskId"], "rank": rank,
            "priority": severity if severity in ("critical", "high", "medium", "low") else "low",
            "status": status, "severity": severity, "title": task.get("title", ""),
            "recommendedAction": task.get("recommendedAction", ""), "actionKind": kind,
            "sourceType": task.get("sourceType"), "sourceId": task.get("sourceId"), "owner": task.get("owner") or "",
            "dueAt": display_time(task["dueAt"]) if task.get("dueAt") else "", "overdue": overdue,
            "needsApproval": needs_approval, "agentId": task.get("agentId") or "",
            "workspacePath": task.get("workspacePath") or "", "collectorId": task.get("collectorId") or "",
            "sourceIdentity": task.get("ingestionSourceId") or "", "eventId": task.get("eventId") or "",
            "traceId": task.get("traceId") or "", "objectiveId": labels.get("objectiveId") or "",
            "issueId": labels.get("issueId") or "",
            "evidence": {"primaryType": primary_type, "primaryId": primary_id, "eventId": task.get("eventId") or "",
                         "incidentId": task.get("incidentId") or "", "alertId": task.get("alertId") or "",
                         "taskId": task["taskId"], "objectiveId": labels.get("objectiveId") or "",
                         "issueId": labels.get("issueId") or "", "bundleHint": hint},
            "nextSteps": steps,
        }


def _int(value: object, default: int) -> int:
    try:
        return int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return default


def setup(engine) -> None:
    book = RemediationBook(engine)
    engine.register_book(book)
    engine.remediation = book

    async def scan() -> None:
        await book.scan()

    engine.register_timer(RULE_ID, book.scan_secs, scan)
