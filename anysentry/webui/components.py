"""What every page shares: the page base (refresh with errors shown, never raised), the message bar,
read-only tables and the time windows.

Event content is attacker-influenced (an agent chooses its commands, paths and prompts), so no text
from the API reaches the page as markup: it goes into tables (escaped by Tabulator), plain-text panes,
or through `esc()` into HTML this module builds."""

from __future__ import annotations

import html
import logging
from typing import Iterable

import pandas as pd
import panel as pn

from anysentry.webui.client import ApiClient, ApiError

log = logging.getLogger("anysentry.webui")

# label → SPEC §3.5 timeType
WINDOWS = {"last 30 min": "last_30m", "last hour": "last_1h", "last 3 hours": "last_3h", "last day": "last_1d",
           "last 7 days": "last_7d", "last 30 days": "last_30d"}
DEFAULT_WINDOW = "last_3h"
# Panel 1.10 renamed a widget's `name` to `label` and a button's `button_type` to `color`; 1.9 has only the old
LABEL = "label" if "label" in pn.widgets.Button.param else "name"
PRIMARY = {"color": "primary"} if "color" in pn.widgets.Button.param else {"button_type": "primary"}
SEVERITY_COLORS = {"critical": "#b91c1c", "high": "#dc2626", "medium": "#d97706", "low": "#2563eb",
                   "info": "#6b7280", "safe": "#16a34a"}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def frame(rows: Iterable[dict], columns: dict[str, str]) -> pd.DataFrame:
    """Rows as a table of the chosen keys (titled), in order; missing or null values become ''."""
    records = [{title: _cell(row.get(key)) for key, title in columns.items()} for row in rows]
    return pd.DataFrame(records, columns=list(columns.values()))


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return value


def widget(cls, label: str, **kw):
    """A Panel widget with its label, whatever the Panel version calls the parameter."""
    return cls(**{LABEL: label}, **kw)


def table(columns: dict[str, str], *, height: int | None = None, selectable: bool = False, **kw) -> pn.widgets.Tabulator:
    """A read-only table; with `selectable` one row can be chosen (for details or actions)."""
    return pn.widgets.Tabulator(frame([], columns), disabled=True, show_index=False, layout="fit_data_stretch",
                                selectable=1 if selectable else False, sizing_mode="stretch_width",
                                height=height, **kw)


class MessageBar:
    """One line telling the user what happened: an error from the API, a success, or nothing."""

    STYLES = {"error": ("#fef2f2", "#991b1b", "#fecaca"), "success": ("#f0fdf4", "#166534", "#bbf7d0"),
              "info": ("#eff6ff", "#1e3a8a", "#bfdbfe")}

    def __init__(self):
        self.pane = pn.pane.HTML("", sizing_mode="stretch_width", visible=False, css_classes=["anysentry-message"])
        self.kind = ""
        self.text = ""

    def show(self, kind: str, text: str) -> None:
        background, color, border = self.STYLES[kind]
        self.kind, self.text = kind, text
        self.pane.object = (f'<div class="anysentry-{kind}" style="background:{background};color:{color};'
                            f'border:1px solid {border};border-radius:6px;padding:8px 12px">{esc(text)}</div>')
        self.pane.visible = True

    def error(self, text: str) -> None:
        self.show("error", text)

    def success(self, text: str) -> None:
        self.show("success", text)

    def clear(self) -> None:
        self.kind = self.text = ""
        self.pane.object = ""
        self.pane.visible = False


def empty_note(text: str) -> pn.pane.HTML:
    return pn.pane.HTML(f'<div style="color:#6b7280;padding:6px 0">{esc(text)}</div>', visible=False,
                        sizing_mode="stretch_width")


def stat_card(title: str, value: object, note: str = "", color: str = "#111827") -> str:
    """A small figure card as HTML (every value escaped)."""
    return (f'<div data-figure="{esc(title)}" style="border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;'
            f'min-width:150px"><div style="color:#6b7280;font-size:12px">{esc(title)}</div>'
            f'<div class="figure-value" style="font-size:26px;font-weight:600;color:{color}">{esc(value)}</div>'
            f'<div style="color:#6b7280;font-size:12px">{esc(note)}</div></div>')


def card_row(cards: Iterable[str]) -> str:
    return f'<div style="display:flex;flex-wrap:wrap;gap:10px">{"".join(cards)}</div>'


class Page:
    """A dashboard page: `view` is what the tab shows; `refresh()` reloads it from the API.

    A refresh never raises: an API error is shown in the page's message bar (the data already on
    screen stays) until a later refresh succeeds, and overlapping refreshes (a slow API, a quick
    timer) are skipped. What an action said (a draft that does not parse, a refused update) stays
    until the next action: the periodic refresh never wipes it."""

    title = "page"

    def __init__(self, client: ApiClient, window: pn.widgets.Select):
        self.client = client
        self.window = window
        self.message = MessageBar()
        self._busy = self._again = False
        self._refresh_error = ""  # the message a failed refresh showed (the next good one clears it)

    @property
    def time_type(self) -> str:
        return self.window.value or DEFAULT_WINDOW

    async def refresh(self) -> bool:
        """True when the page reloaded; False when it failed (message shown) or another refresh was
        running (that one then loads once more, so a filter changed meanwhile is not lost)."""
        if self._busy:
            self._again = True
            return False
        self._busy = True
        try:
            while True:
                self._again = False
                await self.load()
                if not self._again:
                    break
            if self.message.kind == "error" and self.message.text == self._refresh_error:
                self.message.clear()
            self._refresh_error = ""
            return True
        except ApiError as exc:
            self._refresh_error = str(exc)
        except Exception as exc:  # a bug must not take the page down: say so, log the details
            log.exception("%s page refresh failed", self.title)
            self._refresh_error = f"the {self.title} page could not be updated ({exc.__class__.__name__}); see the UI server log"
        finally:
            self._busy = False
        self.message.error(self._refresh_error)
        return False

    async def act(self, action, success: str) -> bool:
        """Run a management call from a button; show its outcome; reload on success."""
        try:
            await action()
        except ApiError as exc:
            self.message.error(str(exc))
            return False
        except Exception as exc:
            log.exception("%s page action failed", self.title)
            self.message.error(f"the action failed ({exc.__class__.__name__}); see the UI server log")
            return False
        await self.refresh()
        self.message.success(success)
        return True

    async def load(self) -> None:  # pragma: no cover - every page defines it
        raise NotImplementedError
