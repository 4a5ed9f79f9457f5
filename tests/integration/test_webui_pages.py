"""Page logic against a real API, without a browser: the events page pages through a window by
custom windows (the list has no offset) and loses or repeats nothing at page boundaries."""

from __future__ import annotations

import time

import panel as pn

from anysentry.webui.client import ApiClient
from anysentry.webui.components import DEFAULT_WINDOW, WINDOWS
from anysentry.webui.events import PAGE_SIZE, EventsPage


async def test_events_pages_cover_the_window_without_gaps_or_repeats(api):
    now = int(time.time() * 1000)
    # two events per second, so page boundaries fall inside a second
    events = [{"agentId": "pager", "sessionId": "s1", "kind": "exec", "command": f"echo {n}", "at": now - 60_000 - n * 500}
              for n in range(PAGE_SIZE + 21)]
    for start in range(0, len(events), 40):
        await api.data("POST", "/ingest/events", {"sourceName": "pager", "events": events[start:start + 40]}, expect=201)
    await api.sync()
    client = ApiClient(api.url)
    page = EventsPage(client, pn.widgets.Select(options=WINDOWS, value=DEFAULT_WINDOW))
    try:
        assert await page.refresh()
        first = [item["subject"] for item in page.items]
        assert len(first) == PAGE_SIZE and page.total == len(events)
        assert first[0] == "echo 0" and not page.older.disabled and page.newer.disabled
        await page._older()
        second = [item["subject"] for item in page.items]
        assert not set(first) & set(second)
        assert set(first) | set(second) == {e["command"] for e in events}
        assert page.older.disabled and not page.newer.disabled  # the last page
        assert await page.refresh() and [i["subject"] for i in page.items] == second  # an older page stays put
        await page._newer()
        assert [item["subject"] for item in page.items] == first

        await page._newer()  # already the newest page: nothing moves
        assert [item["subject"] for item in page.items] == first
        page.agent.value = "nobody"  # a filter change starts again from the newest page
        await page._filters_changed()
        assert page.items == [] and page.empty.visible and not page.table.visible
    finally:
        await client.close()
