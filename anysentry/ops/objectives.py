"""Objectives (SPEC §18): targets an operator sets on measured figures, and breach alerts for them.

Every list, create, update and the `objectives.evaluate` timer evaluates all objectives; a breach
raises the `objective.breach` alert (no occurrence increments) and a return to `ok` resolves it.

An `Objective` resource (and a `MaintenanceWindow`) is one record whose id `resource_record_id`
derives from the resource, the one rule the operator, the api replicas' mirror and a REST create in
a cluster share, so every process holds it once."""

from __future__ import annotations

import logging
import re

from anysentry.events.ids import hash_id
from anysentry.events.redact import redact_text
from anysentry.events.timefmt import display_time, now_ms
from anysentry.ops import facts as F
from anysentry.ops.book import Book
from anysentry.ops.coverage import scoped_score
from anysentry.ops.fields import text as clean
from anysentry.ops.maintenance import ACTIVE_ALERT_STATUSES, agent_target_matches, flag, target_matches
from anysentry.store.window import SPANS_MS, TimeWindow

log = logging.getLogger("anysentry.ops.objectives")

TARGET_TYPES = ("global", "workspace", "agent", "collector", "source")
METRICS = ("coverage_score", "open_incidents", "active_alerts", "overdue_remediations", "risky_events",
           "stale_agents", "collector_down", "source_down")
SEVERITIES = ("info", "low", "medium", "high", "critical")
STATUSES = ("ok", "breach", "disabled")
RULE_ID = "objective.breach"
EXCLUDED_RULES = ("objective.breach", "coverage.issue")  # no feedback loops (§18)
DEFAULT_METRIC = "coverage_score"
EVALUATION_WINDOW = "last_1d"
RECOVERED_NOTE = "objective back within target"
DISABLED_NOTE = "objective disabled"
_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_NOUNS = {
    "coverage_score": None,
    "open_incidents": ("open incident", "open incidents"),
    "active_alerts": ("active alert", "active alerts"),
    "overdue_remediations": ("overdue remediation", "overdue remediations"),
    "risky_events": ("risky event", "risky events"),
    "stale_agents": ("stale agent", "stale agents"),
    "collector_down": ("collector down", "collectors down"),
    "source_down": ("source down", "sources down"),
}


def resource_id(prefix: str, namespace: str, name: str) -> str:
    """The id of a custom resource's record: readable, stable, the same under kubectl and REST."""
    return f"{prefix}_" + re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{namespace}_{name}")[:150]


# the label on what the api writes in a cluster (resources for REST records, receiver Secrets); also its field manager
MANAGED_BY = "app.kubernetes.io/managed-by"
API_MANAGER = "anysentry-api"
# annotations the api's mirror writes on the Objective / MaintenanceWindow resources it creates
ID_ANNOTATIONS = {"obj": "anysentry.io/objectiveid", "mw": "anysentry.io/windowid"}
DISPLAY_NAME = "anysentry.io/display-name"  # a REST objective's name (the CRD has no name field)


def resource_record_id(prefix: str, meta: dict) -> str:
    """The record id of the resource with metadata `meta` (`prefix` obj or mw): the id in its
    `ID_ANNOTATIONS` annotation, which older api versions wrote when a REST record got a generated id
    before its resource existed (clients and alert labels still know it), else `resource_id`. A REST
    create in a cluster takes `resource_id` from the start and writes no annotation."""
    legacy = str(((meta.get("annotations") or {}).get(ID_ANNOTATIONS.get(prefix, "")) or "")).strip()
    if re.fullmatch(rf"{prefix}_[A-Za-z0-9_.-]{{1,156}}", legacy):
        return legacy
    return resource_id(prefix, meta.get("namespace") or "default", meta.get("name", ""))


def default_comparator(metric: str) -> str:
    return "gte" if metric == "coverage_score" else "lte"


def default_threshold(metric: str) -> float:
    return 90 if metric == "coverage_score" else 0


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    return int(number) if number.is_integer() else number


def evidence_text(metric: str, value: float) -> str:
    if metric == "coverage_score":
        return f"coverage score {_fmt(value)}"
    singular, plural = _NOUNS[metric]
    return f"{_fmt(value)} {singular if value == 1 else plural}"


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def compare(comparator: str, value: float, threshold: float) -> bool:
    return value >= threshold if comparator == "gte" else value <= threshold


class ObjectivesBook(Book):
    table_name = "objectives"
    id_field = "objectiveId"
    max_records = 2000

    def __init__(self, engine):
        super().__init__()
        self.engine = engine

    # ---- management --------------------------------------------------------------------------
    def _apply_body(self, record: dict, body: dict, creating: bool) -> None:
        if creating or "name" in body:
            record["name"] = redact_text(clean(body.get("name"), 200))
        old_metric = record.get("metric")
        if creating or "metric" in body:
            metric = clean(body.get("metric")).lower()
            record["metric"] = metric if metric in METRICS else (old_metric or DEFAULT_METRIC)
        metric_changed = old_metric is not None and old_metric != record["metric"]
        if creating or "targetType" in body:
            kind = clean(body.get("targetType")).lower()
            record["targetType"] = kind if kind in TARGET_TYPES else "global"
        if creating or "targetId" in body:
            record["targetId"] = clean(body.get("targetId"), 1024)
        if record["targetType"] == "global":
            record["targetId"] = ""
        comparator = clean(body.get("comparator")).lower()
        if comparator in ("gte", "lte"):
            record["comparator"] = comparator
        elif creating or metric_changed or "comparator" in body:
            record["comparator"] = default_comparator(record["metric"])
        threshold = _number(body.get("threshold"))
        if threshold is not None:
            record["threshold"] = max(0, threshold)
        elif creating or metric_changed or "threshold" in body:
            record["threshold"] = default_threshold(record["metric"])
        if creating or "severity" in body:
            severity = clean(body.get("severity")).lower()
            record["severity"] = severity if severity in SEVERITIES else "high"
        if creating or "enabled" in body:
            record["enabled"] = flag(body.get("enabled"), True if creating else record.get("enabled", True))
        for key, limit in (("owner", 120), ("description", 2000)):
            if creating or key in body:
                record[key] = redact_text(clean(body.get(key), limit))
        if not record.get("name"):
            target = record["targetId"] or "global"
            record["name"] = f"{record['metric']} · {target}"

    def save(self, body: dict, *, objective_id: str | None = None, now: int | None = None) -> dict | None:
        """Create (no id, or an explicit new `objectiveId`) or update (`objective_id`) without evaluating."""
        at = now or now_ms()
        if objective_id is None:
            given = clean(body.get("objectiveId"), 160)
            if not (given and given in self.records):
                record: dict = {"objectiveId": given, "createdAt": at, "updatedAt": at}
                self._apply_body(record, body, creating=True)
                if not given:
                    record["objectiveId"] = hash_id("obj", [at, record["name"], record["targetType"], record["targetId"],
                                                            record["metric"]])
                return self.put(record)
            objective_id = given  # an explicit id names one objective: create is idempotent
        record = self.records.get(objective_id)
        if record is None:
            return None
        self._apply_body(record, body, creating=False)
        record["updatedAt"] = max(at, record.get("updatedAt", 0) + 1)
        return self.put(record)

    async def create(self, body: dict, *, now: int | None = None) -> dict:
        at = now or now_ms()
        record = self.save(body, now=at)
        await self.evaluate_all(now=at)
        return record  # type: ignore[return-value]

    async def update(self, objective_id: str, body: dict, *, now: int | None = None) -> dict | None:
        at = now or now_ms()
        record = self.save(body, objective_id=objective_id, now=at)
        if record is not None:
            await self.evaluate_all(now=at)
        return record

    def apply_resource(self, resource) -> dict:
        """An `Objective` custom resource (configuration folder / cluster) as a record; the next
        evaluation (list, timer) computes its status."""
        manifest = resource.to_k8s()
        meta, spec = manifest.get("metadata", {}), manifest.get("spec", {})
        target = spec.get("target") or {}
        name = clean((meta.get("annotations") or {}).get(DISPLAY_NAME), 200) or meta.get("name", "")
        body = {"name": name, "metric": spec.get("metric"), "targetType": target.get("type", "global"),
                "targetId": target.get("id", ""), "severity": spec.get("severity", "high"),
                "owner": spec.get("owner", ""), "description": spec.get("description", ""),
                "enabled": spec.get("enabled", True), "comparator": spec.get("comparator") or "",
                "threshold": spec.get("threshold")}
        objective_id = resource_record_id("obj", meta)
        existing = self.records.get(objective_id)
        if existing is not None:
            probe = dict(existing)
            self._apply_body(probe, body, creating=False)
            if probe == existing:
                return existing  # unchanged manifest: keep updatedAt
            return self.save(body, objective_id=objective_id)  # type: ignore[return-value]
        return self.save({**body, "objectiveId": objective_id})  # type: ignore[return-value]

    # ---- evaluation --------------------------------------------------------------------------
    def _context(self, record: dict) -> dict:
        """Alert context of an objective: the ids its target names."""
        kind, target = record.get("targetType", "global"), record.get("targetId", "")
        ctx: dict = {}
        if kind == "workspace":
            ctx["workspacePath"] = target
        elif kind == "agent":
            ws, sep, agent = target.rpartition(":")
            if sep and ws:
                ctx.update(workspacePath=ws, agentId=agent)
            else:
                ctx["agentId"] = target
        elif kind == "collector":
            ctx["collectorId"] = target
            for cid, hb in self.engine.collectors.latest.items():
                if target in (cid, hb.get("nodeName")):
                    ctx.update(collectorId=cid, nodeName=hb.get("nodeName") or "")
                    break
        elif kind == "source":
            ctx["sourceId"] = target
        if record.get("owner"):
            ctx["owner"] = record["owner"]
        return ctx

    def _collector_ids(self, target: str) -> set[str]:
        ids = {target}
        for cid, hb in self.engine.collectors.latest.items():
            if hb.get("nodeName") and hb.get("nodeName") == target:
                ids.add(cid)
        return ids

    async def _value(self, record: dict, window: TimeWindow, now: int, cache: dict) -> float:
        metric, kind, target = record["metric"], record["targetType"], record.get("targetId", "")
        engine = self.engine
        if kind != "global" and not target:
            kind = "global"

        def matches(ctx: dict) -> bool:
            return target_matches(kind, target, ctx)

        if metric == "coverage_score":
            coverage = getattr(engine, "coverage", None)
            if coverage is None:
                return 100
            if "coverage" not in cache:
                cache["coverage"] = await coverage.compute(window, now=now)
            snap = cache["coverage"]
            if kind == "global":
                return coverage.summary(snap, {})["coverageScore"]
            return scoped_score([i for i in snap.issues if self._issue_matches(kind, target, i)])
        if metric == "open_incidents":
            incidents = getattr(engine, "incidents", None)
            if incidents is None:
                return 0
            collectors = self._collector_ids(target) if kind == "collector" else set()
            count = 0
            for incident in incidents.values():
                if incident.get("status") != "open":
                    continue
                if kind == "collector":
                    if incident.get("collectorId") in collectors or incident.get("lastEventCollectorId") in collectors:
                        count += 1
                elif matches(incident):
                    count += 1
            return count
        if metric == "active_alerts":
            alerts = getattr(engine, "alerts", None)
            if alerts is None:
                return 0
            return sum(1 for a in alerts.values() if a.get("status") in ACTIVE_ALERT_STATUSES
                       and a.get("ruleId") not in EXCLUDED_RULES and matches(a))
        if metric == "overdue_remediations":
            remediation = getattr(engine, "remediation", None)
            if remediation is None:
                return 0
            return sum(1 for t in remediation.values() if remediation.is_overdue(t, now) and matches(t))
        if metric in ("risky_events", "stale_agents"):
            if metric == "risky_events":
                scope: dict = {}
                if kind == "workspace":
                    scope["workspace"] = target
                elif kind == "agent":
                    ctx = self._context(record)
                    scope.update(workspace=ctx.get("workspacePath", ""), agent=ctx.get("agentId", ""))
                elif kind == "collector":
                    scope["collectors"] = sorted(self._collector_ids(target))
                elif kind == "source":
                    scope["source"] = target
                return len(await F.risky_events(getattr(engine, "store", None), window, **scope))
            if "agents" not in cache:
                cache["agents"] = await F.agent_facts(getattr(engine, "store", None), window)
            counts = F.open_incident_counts(engine)
            collectors = self._collector_ids(target) if kind == "collector" else set()
            stale = 0
            for key, fact in cache["agents"].items():
                if not fact.monitored or F.health_state(fact, counts.get(key, 0), now) != "stale":
                    continue
                if kind == "global" or (kind == "workspace" and fact.workspacePath == target) \
                        or (kind == "agent" and agent_target_matches(target, fact.workspacePath, fact.agentId)) \
                        or (kind == "collector" and collectors & set(fact.collectorIds)) \
                        or (kind == "source" and target in fact.sourceIds):
                    stale += 1
            return stale
        if metric == "collector_down":
            registry = engine.collectors
            down = 0
            for cid, hb in registry.latest.items():
                if registry.state(hb, now, 1) != "down":
                    continue
                if kind == "global" or matches({"collectorId": cid, "nodeName": hb.get("nodeName") or "",
                                                 "workspacePath": hb.get("workspacePath") or "",
                                                 "sourceId": hb.get("sourceId") or ""}):
                    down += 1
            return down
        if metric == "source_down":
            registry = engine.sources
            down = 0
            for source in registry.all():
                if not source.get("enabled", True):
                    continue
                status = registry.status(source, now)
                if status not in ("stale", "unused") and source.get("lastResult") != "rejected":
                    continue
                if kind == "global" or matches({"sourceId": source["sourceId"], "workspacePath": source.get("workspacePath") or "",
                                                 "collectorId": source.get("collectorId") or ""}):
                    down += 1
            return down
        return 0

    def _issue_matches(self, kind: str, target: str, issue: dict) -> bool:
        """Exact coverage selectors of a target (§18): workspacePath, agent, collector/node, source."""
        if kind == "collector":
            return issue.get("collectorId") in self._collector_ids(target) or (bool(issue.get("nodeName")) and issue.get("nodeName") == target)
        return target_matches(kind, target, issue)

    async def evaluate_all(self, *, window: TimeWindow | None = None, now: int | None = None) -> None:
        now = now or now_ms()
        window = window or TimeWindow.from_body({"timeType": EVALUATION_WINDOW}, now=now)
        cache: dict = {}
        for record in list(self.records.values()):
            try:
                await self._evaluate(record, window, now, cache)
            except Exception:
                log.exception("objective %s evaluation failed", record.get("objectiveId"))

    async def _evaluate(self, record: dict, window: TimeWindow, now: int, cache: dict) -> None:
        before = (record.get("status"), record.get("currentValue"), record.get("evidence"))
        if not record.get("enabled", True):
            status, value = "disabled", record.get("currentValue")
            evidence = "objective disabled"
        else:
            value = await self._value(record, window, now, cache)
            status = "ok" if compare(record["comparator"], value, record["threshold"]) else "breach"
            evidence = evidence_text(record["metric"], value)
        if status != record.get("status"):
            record["since"] = now
        record.update(status=status, currentValue=value, evidence=evidence, evaluatedAt=now)
        self._sync_alert(record, now)
        if (status, value, evidence) != before:
            self.touch(record)

    def _sync_alert(self, record: dict, now: int) -> None:
        alerts = getattr(self.engine, "alerts", None)
        if alerts is None:
            return
        dedupe = f"objective:{record['objectiveId']}"
        alert_id = hash_id("alt", [dedupe])
        existing = alerts.get(alert_id)
        active = existing is not None and existing.get("status") in ACTIVE_ALERT_STATUSES
        try:
            if record["status"] == "breach":
                # the alerts book consults maintenance (§19): a suppressed breach is not raised and an
                # active breach alert is resolved with the maintenance note
                context = self._context(record)
                target = record.get("targetId") or "global"
                alert = alerts.upsert(
                    rule_id=RULE_ID, kind="objective", dedupe_key=dedupe, severity=record["severity"],
                    title=f"Objective breached: {record['name']}",
                    description=(f"{record['metric']} on {record['targetType']} {target} is {_fmt(record['currentValue'])}, "
                                 f"target {record['comparator']} {_fmt(record['threshold'])} ({record['evidence']})."),
                    source_summary=f"objective · {record['metric']}", context=context,
                    labels={"objectiveId": record["objectiveId"], "metric": record["metric"]}, increment=False, now=now)
                if alert and alert.get("alertId") and record.get("alertId") != alert["alertId"]:
                    record["alertId"] = alert["alertId"]
                    self.touch(record)
            elif active:
                alerts.resolve(dedupe, RECOVERED_NOTE if record["status"] == "ok" else DISABLED_NOTE, now=now)
        except Exception:
            log.exception("objective alert for %s failed", record.get("objectiveId"))

    # ---- presentation ------------------------------------------------------------------------
    def item(self, record: dict) -> dict:
        out = dict(record)
        out.setdefault("status", "disabled" if not record.get("enabled", True) else "ok")
        out.setdefault("currentValue", None)
        out.setdefault("evidence", "")
        for key in ("createdAt", "updatedAt", "evaluatedAt", "since"):
            if out.get(key):
                out[key] = display_time(out[key])
        return out

    async def list(self, body: dict, *, now: int | None = None) -> dict:
        """`POST /objectives/list` (§18): evaluates every objective, then filters and pins."""
        now = now or now_ms()
        window = TimeWindow.from_body(body, default=EVALUATION_WINDOW, now=now) \
            if body.get("timeType") in (*SPANS_MS, "custom") else None
        await self.evaluate_all(window=window, now=now)
        pin = clean(body.get("objectiveId"), 160)
        status = clean(body.get("status")).lower()
        status = status if status in STATUSES else "all"
        target_type = clean(body.get("targetType")).lower()
        target_id = clean(body.get("targetId"), 1024)
        metric = clean(body.get("metric")).lower()
        q = clean(body.get("q"), 200).lower()
        limit = max(1, min(500, int(_number(body.get("limit")) or 100)))
        scoped = bool(target_type or target_id or metric)
        pin_only = bool(pin) and not scoped and status == "all" and not q
        pinned, items = [], []
        for record in self.records.values():
            if pin and record["objectiveId"] == pin:
                pinned.append(record)
                continue
            if pin_only:
                continue
            if target_type and record.get("targetType") != target_type:
                continue
            if target_id and record.get("targetId") != target_id:
                continue
            if metric and record.get("metric") != metric:
                continue
            if status != "all" and record.get("status") != status:
                continue
            if q and q not in " ".join(str(record.get(k, "")) for k in (
                    "objectiveId", "name", "metric", "targetType", "targetId", "owner", "description", "evidence")).lower():
                continue
            items.append(record)
        order = {"breach": 0, "ok": 1, "disabled": 2}
        items.sort(key=lambda r: (order.get(r.get("status"), 3), -_SEVERITY_RANK.get(r.get("severity"), 0), r.get("name", "")))
        rows = [self.item(r) for r in pinned + items]
        everything = list(self.records.values())
        summary = {
            "totalObjectives": len(everything),
            "enabledObjectives": sum(1 for r in everything if r.get("enabled", True)),
            "okObjectives": sum(1 for r in everything if r.get("status") == "ok"),
            "breachedObjectives": sum(1 for r in everything if r.get("status") == "breach"),
            "disabledObjectives": sum(1 for r in everything if r.get("status") == "disabled"),
            "highSeverityBreaches": sum(1 for r in everything if r.get("status") == "breach"
                                        and r.get("severity") in ("high", "critical")),
        }
        return {"items": rows[:limit], "total": len(rows), "summary": summary, "updateTime": display_time(now)}


def setup(engine) -> None:
    book = ObjectivesBook(engine)
    engine.register_book(book)
    engine.objectives = book

    async def evaluate() -> None:
        await book.evaluate_all()

    engine.register_timer("objectives.evaluate", 60, evaluate)
