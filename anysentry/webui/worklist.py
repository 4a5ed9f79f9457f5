"""A work list: items a human moves through statuses (incidents, alerts), listed by status, with the
status actions the REST API offers on the selected item (`PUT <path>/:id`, admin token)."""

from __future__ import annotations

import panel as pn

from anysentry.webui.client import segment
from anysentry.webui.components import Page, empty_note, esc, frame, table, widget


def update_body(status: str, owner: str = "", note: str = "", **extra) -> dict:
    """The PUT body: the new status, plus owner and note only when the user wrote them."""
    body: dict = {"status": status}
    if owner.strip():
        body["owner"] = owner.strip()
    if note.strip():
        body["note"] = note.strip()
    body.update(extra)
    return body


def summary_text(summary: dict, labels: dict[str, str]) -> str:
    return " · ".join(f"{summary.get(key, 0)} {label}" for key, label in labels.items())


class WorkListPage(Page):
    """Subclasses name the endpoints, the columns, the status filter and the actions."""

    noun = "item"
    list_path = ""
    update_prefix = ""
    id_key = ""
    columns: dict[str, str] = {}
    statuses: dict[str, str] = {}  # filter label → status value
    default_status = "all"
    summary_labels: dict[str, str] = {}
    actions: dict[str, str] = {}  # button label → status it sets
    # each page's own words: with Bokeh 3.9 (Panel 1.9 on Python 3.11) hidden tabs stay in the page,
    # so a placeholder two pages shared would name two inputs at once
    note_hint = "why (optional)"
    limit = 200

    def __init__(self, client, window):
        super().__init__(client, window)
        self.status = widget(pn.widgets.Select, "status", options=self.statuses, value=self.default_status, width=160)
        self.summary = pn.pane.HTML("", sizing_mode="stretch_width")
        self.table = table(self.columns, selectable=True, height=420, css_classes=[f"anysentry-{self.noun}s-table"])
        self.empty = empty_note(f"No {self.noun}s with this status in this window.")
        self.selected = pn.pane.HTML("", sizing_mode="stretch_width")
        self.owner = widget(pn.widgets.TextInput, "owner", placeholder="who handles it (optional)", width=200)
        self.note = widget(pn.widgets.TextInput, "note", placeholder=self.note_hint, width=300)
        self.buttons = {label: widget(pn.widgets.Button, label, disabled=True, width=120) for label in self.actions}
        for label, button in self.buttons.items():
            button.on_click(self._action(self.actions[label]))
        self.items: list[dict] = []
        self.chosen_id: str | None = None  # kept on the server: the browser's row highlight is cosmetic
        self.status.param.watch(self._status_changed, "value")
        self.table.on_click(self._clicked)
        self.view = pn.Column(self.message.pane, pn.Row(self.status, self.summary), self.empty, self.table,
                              self.selected, pn.Row(*self.extra_inputs(), self.owner, self.note),
                              pn.Row(*self.buttons.values()), sizing_mode="stretch_width")

    def extra_inputs(self) -> list:
        return []

    def extra_fields(self, status: str) -> dict:
        return {}

    async def load(self) -> None:
        data = await self.client.post(self.list_path, {"timeType": self.time_type, "status": self.status.value,
                                                       "limit": self.limit})
        items = data.get("items") or []
        if items != self.items:  # replacing a table's data clears its highlighted row in the browser
            self.items = items
            self.table.value = frame(items, self.columns)
        ids = [item.get(self.id_key) for item in items]
        self.table.selection = [ids.index(self.chosen_id)] if self.chosen_id in ids else []
        self.table.visible, self.empty.visible = bool(items), not items
        counts = summary_text(data.get("summary") or {}, self.summary_labels)
        self.summary.object = f'<div style="padding-top:24px">{esc(counts)}</div>'
        self._show_chosen()

    def current(self) -> dict | None:
        return next((item for item in self.items if item.get(self.id_key) == self.chosen_id), None)

    def _clicked(self, event) -> None:
        if event.row is not None and 0 <= event.row < len(self.items):
            self.chosen_id = self.items[event.row].get(self.id_key)
            self._show_chosen()

    def _show_chosen(self) -> None:
        item = self.current()
        for label, button in self.buttons.items():
            button.disabled = item is None or item.get("status") == self.actions[label]
        if item is None:
            self.selected.object = f"Select {'an' if self.noun[0] in 'aeiou' else 'a'} {self.noun} to act on it."
        else:
            self.selected.object = (f'<b>{esc(item.get("title"))}</b> — {esc(item.get("status"))}, '
                                    f'{esc(item.get("severity"))} · <code>{esc(item.get(self.id_key))}</code>')

    def _action(self, status: str):
        async def run(_event=None) -> None:
            item = self.current()
            if item is None:
                return
            item_id = item.get(self.id_key)
            body = update_body(status, self.owner.value or "", self.note.value or "", **self.extra_fields(status))

            async def put():
                await self.client.put(f"{self.update_prefix}/{segment(item_id)}", body)

            if await self.act(put, f"{self.noun} {item_id} is now {status}"):
                self.note.value = ""
        return run

    async def _status_changed(self, _event=None) -> None:
        await self.refresh()
