"""Events: the judged event stream, newest first, with filters, paging and the full record of a row.

`events/list` (SPEC §14.1) has a limit but no offset, so older pages are custom windows ending at
the oldest event shown: the list's times have one-second resolution, so a page ends at the end of
that second and drops the events already shown."""

from __future__ import annotations

import json

import panel as pn

from anysentry.events.kinds import RECORDED_KINDS
from anysentry.events.timefmt import now_ms, parse_time
from anysentry.store.window import SPANS_MS
from anysentry.webui.client import ApiError
from anysentry.webui.components import Page, empty_note, frame, table, widget

PAGE_SIZE = 50
COLUMNS = {"at": "time (UTC)", "verdict": "verdict", "severity": "severity", "eventKind": "kind", "agentId": "agent",
           "subject": "subject", "reason": "reason", "riskName": "risk", "workspacePath": "workspace"}
VERDICTS = {"any verdict": "", "block": "block", "escalate": "escalate", "allow": "allow"}
KINDS = {"any kind": "", **{kind: kind for kind in sorted(RECORDED_KINDS)}}


def list_body(time_type: str, filters: dict, *, limit: int = PAGE_SIZE, cursor: int | None = None,
              window_start: int | None = None) -> dict:
    """The `events/list` body: the window (or a custom window ending at `cursor`) and the set filters."""
    body: dict = {"timeType": time_type, "limit": limit}
    if cursor is not None:
        body.update(timeType="custom", startTime=window_start, endTime=cursor)
    body.update({key: value.strip() for key, value in filters.items() if value and value.strip()})
    return body


def older_cursor(items: list[dict]) -> int | None:
    """The end of the next (older) page: the last millisecond of the oldest shown event's second."""
    if not items:
        return None
    return parse_time(items[-1].get("at"), 0) + 999


def fresh_items(items: list[dict], shown: set[str]) -> list[dict]:
    """A page's rows without those the previous page already showed (the shared second)."""
    return [item for item in items if item.get("eventId") not in shown]


def detail_text(item: dict) -> str:
    """The whole record of one event, as readable JSON (already redacted by the API)."""
    return json.dumps(item, indent=2, sort_keys=True, ensure_ascii=False, default=str)


class EventsPage(Page):
    title = "Events"

    def __init__(self, client, window):
        super().__init__(client, window)
        self.verdict = widget(pn.widgets.Select, "verdict", options=VERDICTS, value="", width=140)
        self.kind = widget(pn.widgets.Select, "kind", options=KINDS, value="", width=150)
        self.agent = widget(pn.widgets.TextInput, "agent id", placeholder="exact agent id", width=170)
        self.workspace = widget(pn.widgets.TextInput, "workspace", placeholder="exact workspace path", width=190)
        self.text = widget(pn.widgets.TextInput, "text", placeholder="search subject, reason…", width=220)
        self.newer = widget(pn.widgets.Button, "◀ newer", width=90, disabled=True)
        self.older = widget(pn.widgets.Button, "older ▶", width=90, disabled=True)
        self.position = pn.pane.HTML("", width=360)
        self.table = table(COLUMNS, selectable=True, height=520, css_classes=["anysentry-events-table"])
        self.empty = empty_note("No events match this window and these filters.")
        self.detail_title = pn.pane.HTML("<b>Select a row to see the whole event.</b>")
        self.detail = pn.pane.Str("", sizing_mode="stretch_width", styles={"font-size": "12px"},
                                  css_classes=["anysentry-event-detail"])
        self.items: list[dict] = []
        self._shown: list[dict] | None = None  # what the table holds; None: reload this page
        self.chosen_id: str | None = None
        self.cursors: list[int | None] = [None]  # endTime of each page; [None] = the live first page
        self.window_start: int | None = None
        self.total = 0
        for filter_widget in (self.verdict, self.kind, self.agent, self.workspace, self.text):
            filter_widget.param.watch(self._filters_changed, "value")
        self.window.param.watch(self._filters_changed, "value")
        self.newer.on_click(self._newer)
        self.older.on_click(self._older)
        self.table.on_click(self._clicked)
        self.view = pn.Column(
            self.message.pane,
            pn.Row(self.verdict, self.kind, self.agent, self.workspace, self.text),
            pn.Row(self.newer, self.older, self.position),
            self.empty, self.table, self.detail_title, self.detail, sizing_mode="stretch_width")

    @property
    def filters(self) -> dict:
        return {"verdict": self.verdict.value, "eventKind": self.kind.value, "agentId": self.agent.value,
                "workspacePath": self.workspace.value, "q": self.text.value}

    async def load(self) -> None:
        page = len(self.cursors) - 1
        if page == 0:
            self.window_start = now_ms() - SPANS_MS.get(self.time_type, SPANS_MS["last_3h"])
        elif self._shown is not None:  # an older page does not move under the reader
            return
        data = await self.client.post("/events/list", list_body(self.time_type, self.filters, cursor=self.cursors[-1],
                                                                window_start=self.window_start))
        items = data.get("items") or []
        if page == 0:
            self.total = data.get("total", len(items))
        self._show(items)

    def _show(self, items: list[dict]) -> None:
        self.items = items
        if items != self._shown:  # replacing a table's data clears its highlighted row in the browser
            self._shown = items
            self.table.value = frame(items, COLUMNS)
        ids = [item.get("eventId") for item in items]
        self.table.selection = [ids.index(self.chosen_id)] if self.chosen_id in ids else []
        self.table.visible, self.empty.visible = bool(items), not items
        page = len(self.cursors) - 1
        self.position.object = (f"page {page + 1} · {len(items)} shown · {self.total} in the window"
                                if items else f"page {page + 1}")
        self.newer.disabled = page == 0
        self.older.disabled = len(items) < PAGE_SIZE

    def _clicked(self, event) -> None:
        if event.row is None or not 0 <= event.row < len(self.items):
            return
        item = self.items[event.row]
        self.chosen_id = item.get("eventId")
        self.detail_title.object = "<b>Event detail</b>"
        self.detail.object = detail_text(item)

    async def _filters_changed(self, _event=None) -> None:
        self.cursors = [None]
        self._shown = None
        await self.refresh()

    async def _newer(self, _event=None) -> None:
        if len(self.cursors) > 1:
            self.cursors.pop()
            self._shown = None
            await self.refresh()

    async def _older(self, _event=None) -> None:
        cursor = older_cursor(self.items)
        if cursor is None:
            return
        shown = {item.get("eventId") for item in self.items}
        try:
            body = list_body(self.time_type, self.filters, cursor=cursor, window_start=self.window_start)
            items = fresh_items((await self.client.post("/events/list", body)).get("items") or [], shown)
            if not items and len(shown) >= PAGE_SIZE:  # a whole page in one second: step past it
                body["endTime"] = cursor - 1000
                items = (await self.client.post("/events/list", body)).get("items") or []
        except ApiError as exc:
            self.message.error(str(exc))
            return
        self.cursors.append(body["endTime"])
        self._show(items)
