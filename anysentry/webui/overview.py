"""Overview: is the plane healthy, what was judged, what is risky, and what needs a human now.

Every figure comes from the API's aggregates for the chosen window (SPEC §14.3) and healthz (§28.1);
the shaping functions turn those answers into rows and cards and are tested on real answers."""

from __future__ import annotations

import asyncio

import panel as pn

from anysentry.webui.components import (SEVERITY_COLORS, Page, card_row, empty_note, esc, frame, stat_card, table)

FUNNEL_COLUMNS = {"stage": "stage", "count": "events", "share": "share of all events", "detail": "what happens there"}
RISK_COLUMNS = {"group": "group", "riskName": "risk", "eventCount": "events", "change": "vs previous window"}
WORKSPACE_COLUMNS = {"workspacePath": "workspace", "sessionCount": "sessions", "totalRiskScore": "total risk score",
                     "riskLevelText": "risk level"}
RISK_GROUPS = (("systemRisks", "system"), ("communicationRisks", "communication"), ("singleAgentRisks", "single-agent"))


def health_figures(healthz: dict, card: dict, incidents: dict, alerts: dict) -> list[dict]:
    """The headline cards: health score, judged events, blocks, escalations, open incidents and alerts."""
    score = card.get("healthScore", 100)
    incident_summary = incidents.get("summary") or {}
    alert_summary = alerts.get("summary") or {}
    return [
        {"title": "health score", "value": score, "note": card.get("healthStatusText", ""),
         "color": SEVERITY_COLORS["safe" if score >= 75 else "medium" if score >= 50 else "critical"]},
        {"title": "events judged", "value": card.get("eventCount", 0), "note": "in this window", "color": "#111827"},
        {"title": "blocked", "value": card.get("blockCount", 0), "note": "verdict block",
         "color": SEVERITY_COLORS["high"] if card.get("blockCount") else "#111827"},
        {"title": "escalated", "value": card.get("escalateCount", 0), "note": "verdict escalate",
         "color": SEVERITY_COLORS["medium"] if card.get("escalateCount") else "#111827"},
        {"title": "open incidents", "value": incident_summary.get("open", 0),
         "note": f"{incident_summary.get('acknowledged', 0)} acknowledged",
         "color": SEVERITY_COLORS["high"] if incident_summary.get("open") else "#111827"},
        {"title": "active alerts", "value": alert_summary.get("activeAlerts", 0),
         "note": f"{alert_summary.get('criticalAlerts', 0)} critical, {alert_summary.get('openAlerts', 0)} open",
         "color": SEVERITY_COLORS["critical"] if alert_summary.get("criticalAlerts") else "#111827"},
    ]


def service_status(healthz: dict) -> dict:
    """One line on the API itself: status, storage, buffered events, management auth, stored events."""
    storage = healthz.get("storage") or {}
    events = healthz.get("events") or {}
    ready = storage.get("clickhouseReady", True)
    return {
        "ok": healthz.get("status") == "ok" and ready and not storage.get("bufferFull"),
        "text": (f"API {healthz.get('status', 'unknown')} · storage {storage.get('mode', '?')} "
                 f"({'ready' if ready else 'unreachable: events wait in the durable buffer'}) · "
                 f"{storage.get('bufferedEvents', 0)} buffered · {events.get('total', 0)} events stored · "
                 f"management auth {'on' if (healthz.get('managementAuth') or {}).get('enabled') else 'off'}"),
    }


def funnel_rows(funnel: dict) -> list[dict]:
    rows = [{"stage": t.get("tierName") or t.get("tierCode"), "count": t.get("count", 0),
             "share": f"{t.get('percentage', 0):.1f}%", "detail": t.get("slaDesc", "")} for t in funnel.get("tiers") or []]
    final = funnel.get("finalBlock") or {}
    rows.append({"stage": "blocked (final)", "count": final.get("count", 0),
                 "share": f"{final.get('percentage', 0):.1f}%", "detail": "verdict block after every tier"})
    return rows


def risk_cards(summary: dict) -> list[dict]:
    return [{"title": c.get("riskTypeName") or c.get("riskTypeCode"), "value": c.get("eventCount", 0),
             "note": "risky events", "color": SEVERITY_COLORS["high"] if c.get("eventCount") else "#111827"}
            for c in summary.get("summaryCards") or []]


def risk_rows(breakdown: dict) -> list[dict]:
    """Risks that occurred in the window (or the one before), most frequent first."""
    rows = []
    for key, group in RISK_GROUPS:
        for item in (breakdown.get(key) or {}).get("items") or []:
            if item.get("eventCount") or item.get("previousCount"):
                change = item.get("changeRate", 0.0)
                rows.append({"group": group, "riskName": item.get("riskName") or item.get("riskCode"),
                             "eventCount": item.get("eventCount", 0), "change": f"{change:+.0f}%"})
    return sorted(rows, key=lambda r: -r["eventCount"])


def top_session(highest: dict) -> dict | None:
    """The session carrying the most risk, or None when the window has no risky session."""
    if not highest.get("sessionId") or not highest.get("riskyEventCount", highest.get("eventCount", 0)):
        return None
    dims = [f"{d.get('dimensionName')} {d.get('score')}/3" for d in highest.get("riskDimensions") or [] if d.get("score")]
    return {"sessionId": highest["sessionId"], "workspacePath": highest.get("workspacePath", ""),
            "userId": highest.get("userId", ""), "score": highest.get("compositeScore", 0),
            "level": highest.get("riskLevel", "safe"), "levelText": highest.get("riskLevelText", ""),
            "lastEventTime": highest.get("lastEventTime", ""), "riskyEvents": highest.get("riskyEventCount", 0),
            "dimensions": dims}


def session_html(session: dict) -> str:
    color = SEVERITY_COLORS.get(session["level"], "#111827")
    dims = ", ".join(session["dimensions"]) or "no dimension scored"
    return (f'<div style="border:1px solid #e5e7eb;border-left:4px solid {color};border-radius:8px;padding:10px 14px">'
            f'<div style="font-weight:600">session {esc(session["sessionId"])} · '
            f'<span style="color:{color}">{esc(session["levelText"])} ({esc(session["score"])})</span></div>'
            f'<div>workspace {esc(session["workspacePath"] or "-")} · user {esc(session["userId"] or "-")} · '
            f'{esc(session["riskyEvents"])} risky events · last at {esc(session["lastEventTime"])}</div>'
            f'<div style="color:#6b7280">{esc(dims)}</div></div>')


class OverviewPage(Page):
    title = "Overview"

    def __init__(self, client, window):
        super().__init__(client, window)
        self.status = pn.pane.HTML("", sizing_mode="stretch_width")
        self.cards = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["anysentry-overview-cards"])
        self.funnel = table(FUNNEL_COLUMNS)
        self.risk_cards = pn.pane.HTML("", sizing_mode="stretch_width")
        self.risks = table(RISK_COLUMNS)
        self.no_risks = empty_note("No risky events in this window.")
        self.session = pn.pane.HTML("", sizing_mode="stretch_width")
        self.workspaces = table(WORKSPACE_COLUMNS, height=220)
        self.no_workspaces = empty_note("No workspace carried risk in this window.")
        self.view = pn.Column(
            self.message.pane, self.status, self.cards,
            pn.pane.HTML("<h3>Decision funnel</h3>"), self.funnel,
            pn.pane.HTML("<h3>Risks</h3>"), self.risk_cards, self.no_risks, self.risks,
            pn.pane.HTML("<h3>Highest-risk session and workspaces</h3>"), self.session, self.no_workspaces,
            self.workspaces, sizing_mode="stretch_width")

    async def load(self) -> None:
        window = {"timeType": self.time_type}
        post = self.client.post
        (healthz, card, funnel, summary, breakdown, highest, workspaces, incidents, alerts) = await asyncio.gather(
            self.client.get("/healthz"), post("/top/healthCard", window), post("/sessions/decisionFunnel", window),
            post("/risks/summary", window), post("/risks/breakdown", window), post("/sessions/highestRisk", window),
            post("/sessions/workspaceRiskDistribution", window),
            post("/incidents/list", {**window, "status": "all", "limit": 1}),
            post("/alerts/list", {**window, "status": "all", "limit": 1}))
        status = service_status(healthz)
        self.status.object = (f'<div style="color:{"#166534" if status["ok"] else "#991b1b"}">'
                              f'{"●" if status["ok"] else "▲"} {esc(status["text"])}</div>')
        self.cards.object = card_row(stat_card(f["title"], f["value"], f["note"], f["color"])
                                     for f in health_figures(healthz, card, incidents, alerts))
        self.funnel.value = frame(funnel_rows(funnel), FUNNEL_COLUMNS)
        self.risk_cards.object = card_row(stat_card(c["title"], c["value"], c["note"], c["color"]) for c in risk_cards(summary))
        rows = risk_rows(breakdown)
        self.risks.value = frame(rows, RISK_COLUMNS)
        self.risks.visible, self.no_risks.visible = bool(rows), not rows
        session = top_session(highest)
        self.session.object = session_html(session) if session else ""
        self.session.visible = session is not None
        ranked = workspaces.get("list") or []
        self.workspaces.value = frame(ranked, WORKSPACE_COLUMNS)
        self.workspaces.visible, self.no_workspaces.visible = bool(ranked), not ranked
