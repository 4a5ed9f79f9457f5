"""Sources & Collectors: who sends events and whether they are alive (SPEC §22.3, §23.2). Read-only:
tokens are issued and rotated through the Source resources, never shown here."""

from __future__ import annotations

import asyncio

import panel as pn

from anysentry.webui.components import Page, empty_note, esc, frame, table

SOURCE_COLUMNS = {"name": "name", "type": "type", "statusText": "status", "enabled": "enabled",
                  "requireToken": "token required", "acceptedEvents": "accepted", "rejectedEvents": "rejected",
                  "lastSeenAt": "last seen (UTC)", "tokenRotationStatus": "token rotation", "lastError": "last error",
                  "owner": "owner"}
COLLECTOR_COLUMNS = {"collectorId": "collector", "nodeName": "node", "stateText": "state", "version": "version",
                     "eventCount": "events", "riskyEventCount": "risky", "droppedEvents": "dropped",
                     "errorCount": "errors", "queueDepth": "queue", "lastHeartbeatAt": "last heartbeat (UTC)",
                     "message": "message"}
SOURCE_SUMMARY = {"totalSources": "sources", "activeSources": "active", "staleSources": "stale",
                  "unusedSources": "unused", "disabledSources": "disabled", "rejectedEvents": "rejected events",
                  "tokenRotationOverdueSources": "token rotation overdue"}
COLLECTOR_SUMMARY = {"totalCollectors": "collectors", "healthyCollectors": "healthy", "quietCollectors": "quiet",
                     "degradedCollectors": "degraded", "staleCollectors": "stale", "downCollectors": "down"}


def summary_line(summary: dict, labels: dict[str, str]) -> str:
    """Counts as one line; zero counts other than the total are left out."""
    first = next(iter(labels))
    parts = [f"{summary.get(key, 0)} {label}" for key, label in labels.items() if key == first or summary.get(key)]
    return " · ".join(parts)


class SourcesPage(Page):
    title = "Sources & Collectors"

    def __init__(self, client, window):
        super().__init__(client, window)
        self.source_summary = pn.pane.HTML("", sizing_mode="stretch_width")
        self.sources = table(SOURCE_COLUMNS, height=300, css_classes=["anysentry-sources-table"])
        self.no_sources = empty_note("No source has been registered or seen yet: producers appear here on their first event.")
        self.collector_summary = pn.pane.HTML("", sizing_mode="stretch_width")
        self.collectors = table(COLLECTOR_COLUMNS, height=300, css_classes=["anysentry-collectors-table"])
        self.no_collectors = empty_note("No collector has sent a heartbeat in this window.")
        self.view = pn.Column(self.message.pane, pn.pane.HTML("<h3>Sources</h3>"), self.source_summary,
                              self.no_sources, self.sources, pn.pane.HTML("<h3>Collectors</h3>"),
                              self.collector_summary, self.no_collectors, self.collectors, sizing_mode="stretch_width")

    async def load(self) -> None:
        sources, collectors = await asyncio.gather(
            self.client.post("/sources/list", {"limit": 500}),
            self.client.post("/collectors/health", {"timeType": self.time_type, "limit": 500}))
        items = sources.get("items") or []
        self.sources.value = frame(items, SOURCE_COLUMNS)
        self.sources.visible, self.no_sources.visible = bool(items), not items
        self.source_summary.object = esc(summary_line(sources.get("summary") or {}, SOURCE_SUMMARY))
        nodes = collectors.get("items") or []
        self.collectors.value = frame(nodes, COLLECTOR_COLUMNS)
        self.collectors.visible, self.no_collectors.visible = bool(nodes), not nodes
        self.collector_summary.object = esc(summary_line(collectors.get("summary") or {}, COLLECTOR_SUMMARY))
