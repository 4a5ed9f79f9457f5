"""The dashboard: a header (API, window, refresh) over one tab per page, refreshed every few seconds.

Only the visible tab reloads on each tick (and at once when it is opened), so an idle browser costs
the API a handful of calls per tick. No template: Panel's Fast and Material templates fetch Google
Fonts, which hangs where outbound traffic is dropped; everything here is served by the UI server."""

from __future__ import annotations

import time

import panel as pn

from anysentry.webui.alerts import AlertsPage
from anysentry.webui.client import ApiClient
from anysentry.webui.components import DEFAULT_WINDOW, WINDOWS, Page, esc, widget
from anysentry.webui.events import EventsPage
from anysentry.webui.incidents import IncidentsPage
from anysentry.webui.overview import OverviewPage
from anysentry.webui.policy import PolicyPage
from anysentry.webui.sources import SourcesPage

DEFAULT_REFRESH_SECS = 5.0
PAGES = (OverviewPage, EventsPage, IncidentsPage, AlertsPage, SourcesPage, PolicyPage)


class Dashboard:
    """One browser session's dashboard; pages share the client and the time-window selector."""

    def __init__(self, client: ApiClient, refresh_secs: float = DEFAULT_REFRESH_SECS):
        self.client = client
        self.refresh_secs = refresh_secs
        self.window = widget(pn.widgets.Select, "window", options=WINDOWS, value=DEFAULT_WINDOW, width=150)
        self.auto = widget(pn.widgets.Checkbox, f"refresh every {refresh_secs:g} s", value=True, width=170)
        self.updated = pn.pane.HTML("", width=260, css_classes=["anysentry-updated"])
        self.pages: list[Page] = [page(client, self.window) for page in PAGES]
        self.tabs = pn.Tabs(*[(page.title, page.view) for page in self.pages], sizing_mode="stretch_width")
        token = "admin token set" if client.has_token else "no admin token: actions need one when the API requires it"
        header = pn.Row(
            pn.pane.HTML(f'<div style="font-size:22px;font-weight:700">AnySentry</div>'
                         f'<div style="color:#6b7280;font-size:12px">API {esc(client.api_url)} · {esc(token)}</div>',
                         width=420),
            self.window, self.auto, self.updated, sizing_mode="stretch_width", css_classes=["anysentry-header"])
        self.view = pn.Column(header, self.tabs, sizing_mode="stretch_width")
        self.tabs.param.watch(self._changed, "active")
        self.window.param.watch(self._changed, "value")

    @property
    def page(self) -> Page:
        return self.pages[self.tabs.active]

    async def refresh(self) -> None:
        page = self.page
        if await page.refresh():
            at = time.strftime("%H:%M:%S", time.gmtime())
            self.updated.object = f'<div style="color:#6b7280;padding-top:24px">{esc(page.title)} updated {at} UTC</div>'

    async def tick(self) -> None:
        if self.auto.value:
            await self.refresh()

    async def _changed(self, _event=None) -> None:
        await self.refresh()

    def servable(self) -> pn.viewable.Viewable:
        """Wire the session's timers (first load when the page is ready, then periodic) and return the view."""
        pn.state.onload(self.refresh)
        pn.state.add_periodic_callback(self.tick, period=int(self.refresh_secs * 1000))
        return self.view


def dashboard_factory(client: ApiClient, refresh_secs: float = DEFAULT_REFRESH_SECS):
    """What the Panel server calls once per browser session."""
    def build() -> pn.viewable.Viewable:
        return Dashboard(client, refresh_secs).servable()
    return build
