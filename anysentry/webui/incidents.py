"""Incidents (SPEC §15): grouped risky events; acknowledge, resolve or reopen the selected one."""

from __future__ import annotations

from anysentry.webui.worklist import WorkListPage


class IncidentsPage(WorkListPage):
    title = "Incidents"
    noun = "incident"
    list_path = "/incidents/list"
    update_prefix = "/incidents"
    id_key = "incidentId"
    columns = {"severity": "severity", "status": "status", "title": "title", "agentId": "agent",
               "workspacePath": "workspace", "eventCount": "events", "lastEventAt": "last event (UTC)",
               "owner": "owner", "note": "note"}
    statuses = {"open": "open", "acknowledged": "acknowledged", "resolved": "resolved", "all": "all"}
    default_status = "all"
    summary_labels = {"open": "open", "acknowledged": "acknowledged", "resolved": "resolved"}
    actions = {"Acknowledge": "acknowledged", "Resolve": "resolved", "Reopen": "open"}
