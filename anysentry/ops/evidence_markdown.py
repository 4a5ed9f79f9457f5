"""The Markdown export of an evidence bundle (SPEC §26.3): the sections in order, tables of at most
30 rows, every cell value-redacted and `|` escaped."""

from __future__ import annotations

import orjson

from anysentry.events.redact import redact_text

MAX_TABLE_ROWS = 30
MAX_CELL = 240


def cell(value: object) -> str:
    """One table cell: value-redacted, one line, `|` escaped."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dict, list)):
        text = orjson.dumps(value).decode()
    else:
        text = str(value)
    text = redact_text(text)
    text = " ".join(text.split())[:MAX_CELL]
    return text.replace("\\", "\\\\").replace("|", "\\|")


def table(headers: list[str], rows: list[list], total: int | None = None) -> str:
    if not rows:
        return "_None._\n"
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for row in rows[:MAX_TABLE_ROWS]:
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    shown, total = min(len(rows), MAX_TABLE_ROWS), max(total or 0, len(rows))
    if total > shown:
        lines.append("")
        lines.append(f"_Showing {shown} of {total}._")
    return "\n".join(lines) + "\n"


def _pairs(record: dict) -> list[list]:
    rows = []
    for key, value in record.items():
        if value in (None, "", [], {}):
            continue
        rows.append([key, value])
    return rows


def markdown(bundle: dict) -> str:
    s, scope = bundle["summary"], bundle["scope"]
    out = [f"# Evidence bundle {cell(bundle['bundleId'])}", "",
           f"Generated {cell(bundle['generatedAt'])} · primary {cell(scope.get('primaryType'))}"
           + (f" `{cell(scope['primaryId'])}`" if scope.get("primaryId") else ""), ""]

    def section(title: str, body: str) -> None:
        out.extend([f"## {title}", "", body])

    counts = [[k, v] for k, v in s.items() if k not in ("riskCategories",)]
    section("Scope", table(["Field", "Value"], _pairs(scope) + counts))
    section("Risk Categories", table(["Risk category", "Name", "Events"],
                                     [[c["riskCategory"], c["riskName"], c["eventCount"]] for c in s["riskCategories"]]))
    primary_rows: list[list] = []
    for kind, record in bundle["primary"].items():
        primary_rows.append(["type", kind])
        primary_rows += _pairs(record)
    section("Primary Evidence", table(["Field", "Value"], primary_rows))
    items = bundle["timeline"]["items"]
    section("Timeline", table(["Time", "Kind", "Verdict", "Severity", "Agent", "Subject", "Event"],
                              [[e["at"], e["eventKind"], e["verdict"], e["severity"], e["agentId"], e["subject"], e["eventId"]]
                               for e in items]))
    section("Incidents", table(["Incident", "Status", "Severity", "Title", "Agent", "Workspace", "Events"],
                               [[i.get("incidentId"), i.get("status"), i.get("severity"), i.get("title"), i.get("agentId"),
                                 i.get("workspacePath"), i.get("eventCount")] for i in bundle["incidents"]], s["incidentCount"]))
    section("Alerts", table(["Alert", "Rule", "Status", "Severity", "Title", "Owner"],
                            [[a.get("alertId"), a.get("ruleId"), a.get("status"), a.get("severity"), a.get("title"),
                              a.get("owner")] for a in bundle["alerts"]], s["alertCount"]))
    section("Remediation", table(["Task", "Status", "Severity", "Action", "Title", "Due"],
                                 [[t.get("taskId"), t.get("status"), t.get("severity"), t.get("actionKind"), t.get("title"),
                                   t.get("dueAt")] for t in bundle["remediations"]], s["remediationCount"]))
    section("Objectives", table(["Objective", "Name", "Metric", "Status", "Value", "Threshold"],
                                [[o.get("objectiveId"), o.get("name"), o.get("metric"), o.get("status"), o.get("currentValue"),
                                  o.get("threshold")] for o in bundle["objectives"]], s["objectiveCount"]))
    section("Notification Deliveries", table(["Delivery", "Alert", "Channel", "Action", "Status", "Sent"],
                                             [[d.get("deliveryId"), d.get("alertId"), d.get("channelName"), d.get("action"),
                                               d.get("status"), d.get("sentAt")] for d in bundle["notificationDeliveries"]],
                                             s["notificationDeliveryCount"]))
    section("Maintenance Windows", table(["Window", "Title", "Target", "Status", "Start", "End"],
                                         [[w.get("windowId"), w.get("title"), f"{w.get('targetType')}:{w.get('targetId') or ''}",
                                           w.get("status"), w.get("startAt"), w.get("endAt")] for w in bundle["maintenanceWindows"]],
                                         s["maintenanceWindowCount"]))
    section("Coverage", table(["Issue", "Type", "Severity", "Title", "Suppressed"],
                              [[i.get("issueId"), i.get("type"), i.get("severity"), i.get("title"),
                                i.get("suppressedByMaintenance", False)] for i in bundle["coverageIssues"]], s["coverageIssueCount"]))
    section("Topology", table(["Edge", "Type", "Events", "Risky", "Max severity", "Sample"],
                              [[e.get("edgeId"), e.get("type"), e.get("eventCount"), e.get("riskyEventCount"),
                                e.get("maxSeverity"), e.get("sampleSubject")] for e in bundle["topology"]["edges"]],
                              s["topologyEdgeCount"]))
    section("Agents", table(["Agent", "Workspace", "Classification", "Health", "Events", "Risky", "Owner"],
                            [[a.get("agentId"), a.get("workspacePath"), a.get("classification"), a.get("healthState"),
                              a.get("eventCount"), a.get("riskyEventCount"), a.get("owner")] for a in bundle["agents"]],
                            s["agentCount"]))
    section("Workspaces", table(["Workspace", "Health", "Agents", "Events", "Risky", "Maintenance"],
                                [[w.get("workspacePath"), w.get("healthState"), w.get("agentCount"), w.get("eventCount"),
                                  w.get("riskyEventCount"), w.get("maintenanceActive", False)] for w in bundle["workspaces"]],
                                s["workspaceCount"]))
    section("Sources", table(["Source", "Name", "Type", "Status", "Owner"],
                             [[x.get("sourceId"), x.get("name"), x.get("type"), x.get("status"), x.get("owner")]
                              for x in bundle["sources"]], s["sourceCount"]))
    section("Collectors", table(["Collector", "Node", "State", "Last heartbeat"],
                                [[c.get("collectorId"), c.get("nodeName"), c.get("state"), c.get("lastHeartbeatAt")]
                                 for c in bundle["collectors"]], s["collectorCount"]))
    section("Audit Trail", table(["Time", "Action", "Resource", "Actor", "Result", "Summary"],
                                 [[r.get("at"), r.get("action"), f"{r.get('resourceType')}:{r.get('resourceId')}",
                                   (r.get("actor") or {}).get("id"), r.get("result"), r.get("summary")] for r in bundle["audits"]],
                                 s["auditCount"]))
    return "\n".join(out)
