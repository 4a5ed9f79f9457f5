"""Alerts (SPEC §16): acknowledge, resolve, silence for a while, or reopen the selected alert."""

from __future__ import annotations

import panel as pn

from anysentry.webui.components import widget
from anysentry.webui.worklist import WorkListPage

SILENCE_MINUTES = (5, 10080, 60)  # the API's clamp and default (SPEC §16.3)


class AlertsPage(WorkListPage):
    title = "Alerts"
    noun = "alert"
    list_path = "/alerts/list"
    update_prefix = "/alerts"
    id_key = "alertId"
    columns = {"severity": "severity", "status": "status", "title": "title", "kind": "kind", "agentId": "agent",
               "workspacePath": "workspace", "occurrenceCount": "occurrences", "lastSeenAt": "last seen (UTC)",
               "silencedUntil": "silenced until", "owner": "owner"}
    statuses = {"active": "active", "open": "open", "acknowledged": "acknowledged", "silenced": "silenced",
                "resolved": "resolved", "all": "all"}
    default_status = "all"
    summary_labels = {"activeAlerts": "active", "openAlerts": "open", "acknowledgedAlerts": "acknowledged",
                      "silencedAlerts": "silenced", "resolvedAlerts": "resolved", "criticalAlerts": "critical"}
    actions = {"Acknowledge": "acknowledged", "Resolve": "resolved", "Silence": "silenced", "Reopen": "open"}
    limit = 500
    note_hint = "reason (optional)"

    def extra_inputs(self) -> list:
        low, high, default = SILENCE_MINUTES
        self.silence_minutes = widget(pn.widgets.IntInput, "silence for (minutes)", value=default, start=low, end=high,
                                                   width=160)
        return [self.silence_minutes]

    def extra_fields(self, status: str) -> dict:
        return {"silenceMinutes": int(self.silence_minutes.value or SILENCE_MINUTES[2])} if status == "silenced" else {}
