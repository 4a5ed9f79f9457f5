"""Coverage (SPEC §20): where is the platform blind — sources, collectors, agents, workspaces?

`compute(window)` derives every issue of §20.1 from the source registry, the collector heartbeats and
event facts (monitored events only for agents and workspaces), marks the ones a maintenance window
covers, and keeps the figures the summary and score need. `overview(body)` is the endpoint: it
scopes, filters and pins (§3.6), scores (§20.3), and opens/resolves `coverage.issue` alerts for the
scope it was asked about. Objectives and remediation call `compute` without those side effects."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from anysentry.events.timefmt import display_time, now_ms
from anysentry.ops import facts as F
from anysentry.ops.maintenance import ACTIVE_ALERT_STATUSES, SUPPRESSED_NOTE
from anysentry.store.window import TimeWindow
from anysentry.ops.fields import clamp as _clamp, text as _text

log = logging.getLogger("anysentry.ops.coverage")

SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
WEIGHTS = {"critical": 25, "high": 15, "medium": 7, "low": 3}
ISSUE_TYPES = ("source_unused", "source_stale", "source_rejected", "source_token_rotation_due", "collector_down",
               "collector_stale", "collector_degraded", "collector_quiet", "missing_collector_heartbeat",
               "agent_stale", "agent_uncovered", "workspace_quiet")
SCOPE_FIELDS = ("workspacePath", "agentId", "collectorId", "sourceId")
RULE_ID = "coverage.issue"
CLEARED_NOTE = "coverage issue no longer present"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_OPTIONAL = ("lastSeenAt", "agentId", "workspacePath", "collectorId", "sourceId", "nodeName", "evidenceEventId",
             "evidenceSubject", "maintenanceWindowId", "maintenanceTitle")
MAX_REMEMBERED = 5000

RECOMMENDED = {
    "source_unused": "Point the producer at this source (or disable the source if it is no longer needed) and confirm the first accepted signal.",
    "source_stale": "Check the producer behind this source: is it running, can it reach the API, is its token still valid?",
    "source_rejected": "Inspect the last rejection reason; fix the producer's token or source id, or re-enable the source.",
    "source_token_rotation_due": "Rotate the source token and roll the new token out to its producer.",
    "collector_down": "Check the collector DaemonSet pod on this node (scheduling, crash loops, network to the API).",
    "collector_stale": "Check the collector pod on this node: heartbeats are late.",
    "collector_degraded": "Inspect the collector's drops, errors and probe status; raise its buffers or fix the failing probes.",
    "collector_quiet": "Verify the collector's probes: it reports agents but no events arrive.",
    "missing_collector_heartbeat": "Deploy or upgrade the collector so it sends heartbeats, or fix its source binding.",
    "agent_stale": "Confirm whether the agent is still running; review its open incidents and retire it if it is gone.",
    "agent_uncovered": "Run a live collector on the agent's node (or attach its producer to a collector) so every event is observed.",
    "workspace_quiet": "Confirm the workspace is still in use; every agent in it has gone quiet.",
}


def issue_id(kind: str, workspace: str, agent: str, collector: str, node: str, title: str) -> str:
    """§4.2: `cov_<type>_<ws>_<agent>_<collector>_<node>_<title>`, lowercased, non-alnum runs → `_`, ≤ 140."""
    raw = f"cov_{kind}_{workspace}_{agent}_{collector}_{node}_{title}".lower()
    return _NON_ALNUM.sub("_", raw)[:140]


def score_from(counts: dict[str, int], uncovered: int, source_gaps: int, without_collector: int) -> int:
    """§20.3, counting actionable issues only."""
    raw = (100 - 25 * counts.get("critical", 0) - 15 * counts.get("high", 0) - 7 * counts.get("medium", 0)
           - 3 * counts.get("low", 0) - 4 * uncovered - 2 * source_gaps - min(20, without_collector))
    return max(1, min(100, raw))


def status_text(score: int) -> str:
    if score >= 90:
        return "Well covered"
    if score >= 75:
        return "Minor gaps"
    if score >= 55:
        return "Needs attention"
    if score >= 35:
        return "Insufficient coverage"
    return "Severe blind spots"


def scoped_score(issues: list[dict]) -> int:
    """The scoped objective score (§18): `max(1, 100 − Σ weight)` over actionable issues."""
    return max(1, 100 - sum(WEIGHTS.get(i["severity"], 0) for i in issues if not i.get("suppressedByMaintenance")))


def issue_in_scope(issue: dict, scope: dict) -> bool:
    return all(not value or issue.get(key) == value for key, value in scope.items())


def public_issue(issue: dict) -> dict:
    """The wire shape: display times, no internal markers, optional fields only when set."""
    out = {k: v for k, v in issue.items() if not k.startswith("_")}
    for key in ("detectedAt", "lastSeenAt"):
        if out.get(key):
            out[key] = display_time(out[key])
    for key in _OPTIONAL:
        if not out.get(key):
            out.pop(key, None)
    if not out.get("suppressedByMaintenance"):
        out.pop("suppressedByMaintenance", None)
    return out


@dataclass
class Snapshot:
    """Everything one coverage evaluation found (unscoped)."""
    now: int
    window: TimeWindow
    issues: list[dict] = field(default_factory=list)
    agents: dict = field(default_factory=dict)        # (ws, agent) → AgentFact (monitored only)
    health: dict = field(default_factory=dict)        # (ws, agent) → health state
    live: dict = field(default_factory=dict)          # (ws, agent) → has a live collector
    suppressed_agents: set = field(default_factory=set)
    collectors: list = field(default_factory=list)    # (collectorId, heartbeat, state)
    collector_facts: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)       # (record, status)

    def by_id(self) -> dict[str, dict]:
        return {i["issueId"]: i for i in self.issues}


class Coverage:
    def __init__(self, engine):
        self.engine = engine
        self._first_seen: dict[str, int] = {}

    # ---- evaluation --------------------------------------------------------------------------
    async def compute(self, window: TimeWindow | None = None, *, now: int | None = None) -> Snapshot:
        now = now or now_ms()
        window = window or TimeWindow.from_body({}, now=now)
        store = getattr(self.engine, "store", None)
        agent_facts, collector_facts = await F.event_facts(store, window)  # one query for both
        snap = Snapshot(now, window, collector_facts=collector_facts)
        open_counts = F.open_incident_counts(self.engine)
        found: dict[str, dict] = {}

        def add(issue: dict) -> None:
            found.setdefault(issue["issueId"], issue)

        self._source_issues(snap, add)
        live_collectors = self._collector_issues(snap, add)
        for cid, cfact in collector_facts.items():
            if cid not in self.engine.collectors.latest and cfact.monitoredEventCount:
                add(self._issue(
                    "missing_collector_heartbeat", "high", f"Collector {cid} sends events but no heartbeat",
                    f"{cfact.monitoredEventCount} monitored events carry collector {cid}, which has never sent a heartbeat.",
                    now, detected=cfact.firstEventAt, last_seen=cfact.lastEventAt, collectorId=cid,
                    evidenceEventId=cfact.lastEventId, evidenceSubject=cfact.lastEventSubject))
        self._agent_issues(snap, agent_facts, open_counts, live_collectors, add)
        snap.issues = list(found.values())
        self._mark_maintenance(snap)
        self._remember(snap)
        return snap

    def _issue(self, kind: str, severity: str, title: str, description: str, now: int, *, detected: int | None = None,
               last_seen: int | None = None, **fields) -> dict:
        ws, agent = fields.get("workspacePath", ""), fields.get("agentId", "")
        collector, node = fields.get("collectorId", ""), fields.get("nodeName", "")
        iid = issue_id(kind, ws, agent, collector, node, title)
        issue = {
            "issueId": iid, "type": kind, "severity": severity, "title": title, "description": description,
            "detectedAt": detected or now, "lastSeenAt": last_seen or None,
            "agentId": agent, "workspacePath": ws, "collectorId": collector,
            "sourceId": fields.get("sourceId", ""), "nodeName": node,
            "evidenceEventId": fields.get("evidenceEventId", ""), "evidenceSubject": fields.get("evidenceSubject", ""),
            "recommendedAction": RECOMMENDED[kind],
            "suppressedByMaintenance": False, "maintenanceWindowId": "", "maintenanceTitle": "",
            "labels": {"issueId": iid, "type": kind},
        }
        for key, value in fields.items():
            if key.startswith("_"):
                issue[key] = value
        return issue

    def _source_issues(self, snap: Snapshot, add) -> None:
        registry = self.engine.sources
        now = snap.now
        stale_ms = registry.settings.stale_after_secs * 1000
        for record in registry.all():
            status = registry.status(record, now)
            snap.sources.append((record, status))
            if not record.get("enabled", True):
                continue
            name = record.get("name") or record["sourceId"]
            common = {"sourceId": record["sourceId"], "workspacePath": record.get("workspacePath") or "",
                      "collectorId": record.get("collectorId") or "", "_owner": record.get("owner") or "",
                      "_team": record.get("team") or ""}
            last_signal = max(record.get("lastEventAt") or 0, record.get("lastHeartbeatAt") or 0)
            if status == "unused":
                add(self._issue("source_unused", "low" if record.get("discovered") else "medium",
                                f"Source {name} has no accepted signal", f"Source {name} is enabled but has not delivered an accepted event or heartbeat yet.",
                                now, detected=record.get("createdAt"), _sourceGap=True, **common))
            elif status == "stale":
                add(self._issue("source_stale", "high", f"Source {name} is stale",
                                f"Source {name} last delivered a signal at {display_time(last_signal)}.",
                                now, detected=last_signal + stale_ms, last_seen=last_signal, _sourceGap=True, **common))
            if record.get("lastResult") == "rejected":
                add(self._issue("source_rejected", "high" if record.get("requireToken") else "medium",
                                f"Source {name} is rejecting ingest",
                                f"The last attempt on source {name} was rejected: {record.get('lastError') or 'unknown reason'}.",
                                now, detected=record.get("lastRejectedAt"), last_seen=record.get("lastRejectedAt"), **common))
            rotation, due = registry.rotation_status(record, now)
            if rotation == "overdue":
                add(self._issue("source_token_rotation_due", "medium" if status == "active" else "low",
                                f"Source {name} token rotation due",
                                f"The ingest token of source {name} was due for rotation at {display_time(due)}.",
                                now, detected=due, **common))

    def _collector_issues(self, snap: Snapshot, add) -> set[str]:
        registry = self.engine.collectors
        now = snap.now
        counts = registry.window_counts(snap.window.start, snap.window.end)
        settings = registry.settings
        live: set[str] = set()
        for cid, hb in list(registry.latest.items()):
            cfact = snap.collector_facts.get(cid)
            events = max(sum(counts.get(cid, {}).values()), cfact.eventCount if cfact else 0)
            state = registry.state(hb, now, events)
            snap.collectors.append((cid, hb, state))
            if state not in ("down", "stale"):
                live.add(cid)
            received = hb["receivedAt"]
            source = self.engine.sources.get(hb.get("sourceId")) if hb.get("sourceId") else None
            common = {"collectorId": cid, "nodeName": hb.get("nodeName") or "", "workspacePath": hb.get("workspacePath") or "",
                      "sourceId": hb.get("sourceId") or "", "_owner": (source or {}).get("owner") or "",
                      "_team": (source or {}).get("team") or ""}
            if state == "down":
                add(self._issue("collector_down", "critical", f"Collector {cid} is down",
                                f"No heartbeat from collector {cid} since {display_time(received)}.",
                                now, detected=received + settings.down_after_secs * 1000, last_seen=received, **common))
            elif state == "stale":
                add(self._issue("collector_stale", "high", f"Collector {cid} is stale",
                                f"Collector {cid} last sent a heartbeat at {display_time(received)}.",
                                now, detected=received + settings.stale_after_secs * 1000, last_seen=received, **common))
            elif state == "degraded":
                troubled = bool(hb.get("droppedEvents") or hb.get("outputDropped") or hb.get("errorCount"))
                detail = (f"status {hb.get('status')}, dropped {hb.get('droppedEvents', 0)}, output dropped "
                          f"{hb.get('outputDropped', 0)}, errors {hb.get('errorCount', 0)}")
                add(self._issue("collector_degraded", "high" if troubled else "medium", f"Collector {cid} is degraded",
                                f"Collector {cid} reports {detail}.", now, detected=received, last_seen=received, **common))
            elif state == "quiet" and (hb.get("observedAgents") or 0) > 0:
                add(self._issue("collector_quiet", "low", f"Collector {cid} is quiet",
                                f"Collector {cid} reports {int(hb.get('observedAgents') or 0)} observed agents but no events in the window.",
                                now, detected=max(snap.window.start, hb.get("firstSeen") or 0), last_seen=received, **common))
        return live

    def _agent_issues(self, snap: Snapshot, agent_facts: dict, open_counts: dict, live_collectors: set[str], add) -> None:
        now = snap.now
        workspaces: dict[str, list] = {}
        for key, fact in agent_facts.items():
            if not fact.monitored:
                continue  # agent issues consider monitored agent-scope events only
            snap.agents[key] = fact
            opened = open_counts.get(key, 0)
            health = F.health_state(fact, opened, now)
            snap.health[key] = health
            live = any(cid in live_collectors for cid in fact.collectorIds)
            snap.live[key] = live
            workspaces.setdefault(fact.workspacePath, []).append(health)
            ws, agent = fact.workspacePath, fact.agentId
            risky = fact.riskyEventCount > 0 or opened > 0
            evidence = {"evidenceEventId": fact.lastRiskyEventId or fact.lastEventId,
                        "evidenceSubject": fact.lastRiskySubject if fact.lastRiskyEventId else fact.lastEventSubject}
            if F.activity_state(fact.lastEventAt, now) == "stale":
                add(self._issue("agent_stale", "high" if opened else "medium", f"Agent {agent} is stale",
                                f"Agent {agent} in {ws} has sent nothing since {display_time(fact.lastEventAt)}"
                                + (f" and has {opened} open incident{'s' if opened != 1 else ''}." if opened else "."),
                                now, detected=fact.lastEventAt + F.IDLE_MS, last_seen=fact.lastEventAt,
                                workspacePath=ws, agentId=agent, **evidence))
            if not live:
                where = ", ".join(fact.collectorIds) if fact.collectorIds else "no collector at all"
                add(self._issue("agent_uncovered", "high" if risky else "medium", f"Agent {agent} has no live collector",
                                f"Agent {agent} in {ws} is observed by {where}; no live collector covers it.",
                                now, detected=fact.firstEventAt, last_seen=fact.lastEventAt, workspacePath=ws,
                                agentId=agent, _uncovered=True, **evidence))
            elif fact.eventsWithoutCollector:
                add(self._issue("agent_uncovered", "medium" if risky else "low",
                                f"Agent {agent} has events without a collector",
                                f"{fact.eventsWithoutCollector} events of agent {agent} in {ws} carry no collector id.",
                                now, detected=fact.firstEventAt, last_seen=fact.lastEventAt, workspacePath=ws,
                                agentId=agent, **evidence))
        for ws, states in workspaces.items():
            if len(states) >= 2 and all(s == "stale" for s in states):
                last = max(f.lastEventAt for f in snap.agents.values() if f.workspacePath == ws)
                add(self._issue("workspace_quiet", "medium", f"Workspace {ws} has gone quiet",
                                f"All {len(states)} agents of workspace {ws} are stale.",
                                now, detected=last + F.IDLE_MS, last_seen=last, workspacePath=ws))

    def _mark_maintenance(self, snap: Snapshot) -> None:
        maintenance = getattr(self.engine, "maintenance", None)
        if maintenance is None:
            return
        for issue in snap.issues:
            context = {k: issue.get(k) or "" for k in ("workspacePath", "agentId", "collectorId", "sourceId", "nodeName")}
            window = maintenance.window_for(context, snap.now)
            if window is not None:
                issue.update(suppressedByMaintenance=True, maintenanceWindowId=window["windowId"],
                             maintenanceTitle=window.get("title", ""))
                if issue.get("agentId"):
                    snap.suppressed_agents.add((issue.get("workspacePath") or "", issue["agentId"]))

    def _remember(self, snap: Snapshot) -> None:
        """detectedAt: the first time this process saw the issue, else the derived time."""
        for issue in snap.issues:
            first = self._first_seen.setdefault(issue["issueId"], issue["detectedAt"])
            issue["detectedAt"] = min(first, issue["detectedAt"])
        if len(self._first_seen) > MAX_REMEMBERED:
            current = {i["issueId"] for i in snap.issues}
            self._first_seen = {k: v for k, v in self._first_seen.items() if k in current}

    # ---- scoping and summary -----------------------------------------------------------------
    @staticmethod
    def _agent_in_scope(fact, scope: dict) -> bool:
        return ((not scope.get("workspacePath") or fact.workspacePath == scope["workspacePath"])
                and (not scope.get("agentId") or fact.agentId == scope["agentId"])
                and (not scope.get("collectorId") or scope["collectorId"] in fact.collectorIds)
                and (not scope.get("sourceId") or scope["sourceId"] in fact.sourceIds))

    def summary(self, snap: Snapshot, scope: dict) -> dict:
        scope = {k: v for k, v in scope.items() if v}
        issues = [i for i in snap.issues if issue_in_scope(i, scope)]
        actionable = [i for i in issues if not i.get("suppressedByMaintenance")]
        counts = {sev: sum(1 for i in actionable if i["severity"] == sev) for sev in WEIGHTS}
        agents = {k: f for k, f in snap.agents.items() if self._agent_in_scope(f, scope)}
        uncovered = [k for k in agents if not snap.live.get(k)]
        uncovered_actionable = sum(1 for i in actionable if i.get("_uncovered"))
        source_gaps = len({i["sourceId"] for i in actionable if i.get("_sourceGap")})
        without_collector = sum(f.eventsWithoutCollector for k, f in agents.items())
        without_actionable = sum(f.eventsWithoutCollector for k, f in agents.items() if k not in snap.suppressed_agents)
        score = score_from(counts, uncovered_actionable, source_gaps, without_actionable)

        agents_of_collector: dict[str, list] = {}
        for key, fact in snap.agents.items():
            for cid in fact.collectorIds:
                agents_of_collector.setdefault(cid, []).append(fact)

        def collector_in_scope(cid: str, hb: dict) -> bool:
            seen = agents_of_collector.get(cid, [])
            cfact = snap.collector_facts.get(cid)
            workspaces = {hb.get("workspacePath")} | set(cfact.workspaces if cfact else []) | {f.workspacePath for f in seen}
            return ((not scope.get("collectorId") or cid == scope["collectorId"])
                    and (not scope.get("workspacePath") or scope["workspacePath"] in workspaces)
                    and (not scope.get("agentId") or any(f.agentId == scope["agentId"] for f in seen))
                    and (not scope.get("sourceId") or hb.get("sourceId") == scope["sourceId"]
                         or any(scope["sourceId"] in f.sourceIds for f in seen)))

        def source_in_scope(record: dict) -> bool:
            sid = record["sourceId"]
            return ((not scope.get("sourceId") or sid == scope["sourceId"])
                    and (not scope.get("collectorId") or record.get("collectorId") == scope["collectorId"])
                    and (not scope.get("workspacePath") or record.get("workspacePath") == scope["workspacePath"]
                         or any(sid in f.sourceIds for f in agents.values()))
                    and (not scope.get("agentId") or any(sid in f.sourceIds for f in agents.values())))

        collectors = [(cid, state) for cid, hb, state in snap.collectors if collector_in_scope(cid, hb)]
        sources = [(r, status) for r, status in snap.sources if source_in_scope(r)]
        return {
            "coverageScore": score,
            "statusText": status_text(score),
            "issueCount": len(actionable),
            "criticalIssues": counts["critical"],
            "highIssues": counts["high"],
            "mediumIssues": counts["medium"],
            "lowIssues": counts["low"],
            "suppressedIssues": len(issues) - len(actionable),
            "observedAgents": len(agents),
            "coveredAgents": len(agents) - len(uncovered),
            "uncoveredAgents": len(uncovered),
            "staleAgents": sum(1 for k in agents if snap.health.get(k) == "stale"),
            "totalCollectors": len(collectors),
            "activeCollectors": sum(1 for _, s in collectors if s in ("healthy", "quiet", "degraded")),
            "degradedCollectors": sum(1 for _, s in collectors if s == "degraded"),
            "downCollectors": sum(1 for _, s in collectors if s == "down"),
            "totalSources": len(sources),
            "activeSources": sum(1 for _, s in sources if s == "active"),
            "unhealthySources": sum(1 for r, s in sources if r.get("enabled", True)
                                    and (s in ("stale", "unused") or r.get("lastResult") == "rejected")),
            "eventsWithoutCollector": without_collector,
            "observedWorkspaces": len({f.workspacePath for f in agents.values()}),
        }

    async def score(self, scope: dict | None = None, window: TimeWindow | None = None, *, now: int | None = None) -> int:
        """Global: the §20.3 score; scoped: the objective formula over exactly-matching issues."""
        snap = await self.compute(window, now=now)
        scope = {k: v for k, v in (scope or {}).items() if v}
        if not scope:
            return self.summary(snap, {})["coverageScore"]
        return scoped_score([i for i in snap.issues if issue_in_scope(i, scope)])

    # ---- the endpoint ------------------------------------------------------------------------
    async def overview(self, body: dict, *, now: int | None = None) -> dict:
        now = now or now_ms()
        window = TimeWindow.from_body(body, now=now)
        snap = await self.compute(window, now=now)
        text = lambda key, limit=1024: _text(body.get(key), limit)  # noqa: E731
        pin = text("issueId", 200)
        scope = {key: text(key) for key in SCOPE_FIELDS if text(key)}
        severity = text("severity").lower()
        severity = severity if severity in SEVERITY_RANK else ""
        kind = text("type")
        kind = kind if kind in ISSUE_TYPES else ""
        q = text("q", 200).lower()
        limit = _clamp(body.get("limit"), 1, 500, 120)
        pin_only = bool(pin) and not (scope or severity or kind or q)

        scoped = [i for i in snap.issues if issue_in_scope(i, scope)]
        pinned = [i for i in snap.issues if pin and i["issueId"] == pin]
        rest = []
        if not pin_only:
            for issue in scoped:
                if issue["issueId"] == pin:
                    continue
                if severity and issue["severity"] != severity:
                    continue
                if kind and issue["type"] != kind:
                    continue
                if q and q not in " ".join(str(issue.get(k) or "") for k in (
                        "issueId", "type", "title", "description", "workspacePath", "agentId", "collectorId",
                        "sourceId", "nodeName", "evidenceSubject")).lower():
                    continue
                rest.append(issue)
        rest.sort(key=lambda i: (bool(i.get("suppressedByMaintenance")), -SEVERITY_RANK.get(i["severity"], 0),
                                 -(i.get("lastSeenAt") or i["detectedAt"] or 0), i["title"]))
        rows = pinned + rest
        self._sync_alerts(pinned if pin_only else scoped, scope, pin if pin_only else "", now)
        return {"summary": self.summary(snap, scope), "issues": [public_issue(i) for i in rows[:limit]],
                "total": len(rows), "updateTime": display_time(now)}

    # ---- coverage.issue alerts ---------------------------------------------------------------
    def _sync_alerts(self, issues: list[dict], scope: dict, pin: str, now: int) -> None:
        alerts = getattr(self.engine, "alerts", None)
        if alerts is None:
            return
        wanted: set[str] = set()
        suppressed: set[str] = set()
        for issue in issues:
            if issue.get("suppressedByMaintenance"):
                suppressed.add(issue["issueId"])
                continue
            if SEVERITY_RANK.get(issue["severity"], 0) < SEVERITY_RANK["medium"]:
                continue
            wanted.add(issue["issueId"])
            context = {k: issue.get(k) or "" for k in ("workspacePath", "agentId", "collectorId", "sourceId", "nodeName")}
            context["eventId"] = issue.get("evidenceEventId") or ""
            if issue.get("_owner"):
                context["owner"] = issue["_owner"]
            if issue.get("_team"):
                context["team"] = issue["_team"]
            try:
                alerts.upsert(rule_id=RULE_ID, kind="coverage", dedupe_key=f"coverage:{issue['issueId']}",
                              severity=issue["severity"], title=issue["title"], description=issue["description"],
                              source_summary=f"coverage · {issue['type']}", context=context,
                              labels={"issueId": issue["issueId"], "type": issue["type"]}, increment=False, now=now)
            except Exception:
                log.exception("coverage alert for %s failed", issue["issueId"])
        suppressed_note: set[str] = set()

        def stale(alert: dict) -> bool:
            if alert.get("ruleId") != RULE_ID or alert.get("status") not in ACTIVE_ALERT_STATUSES:
                return False
            issue = (alert.get("labels") or {}).get("issueId", "")
            if pin:
                in_scope = issue == pin
            else:
                in_scope = all((alert.get(k) or "") == v for k, v in scope.items())
            if not in_scope or issue in wanted:
                return False
            if issue in suppressed:
                suppressed_note.add(alert.get("alertId", ""))
                return False  # resolved below with the maintenance note
            return True

        try:
            alerts.resolve_where(stale, CLEARED_NOTE, now=now)
            if suppressed_note:
                alerts.resolve_where(lambda a: a.get("alertId") in suppressed_note and a.get("status") in ACTIVE_ALERT_STATUSES,
                                     SUPPRESSED_NOTE, now=now)
        except Exception:
            log.exception("coverage alert resolution failed")


def setup(engine) -> None:
    engine.coverage = Coverage(engine)
