"""What a page says after an action stays until the user acts again, against a real API: the periodic
refresh (every 5 s) clears only an error a refresh itself showed, never a draft's parse error."""

from __future__ import annotations

import panel as pn

from anysentry.webui.client import ApiClient
from anysentry.webui.components import DEFAULT_WINDOW, WINDOWS
from anysentry.webui.policy import PolicyPage


async def test_an_action_error_survives_the_refresh_and_a_refresh_error_does_not(api, unused_tcp_port):
    client = ApiClient(api.url)
    page = PolicyPage(client, pn.widgets.Select(options=WINDOWS, value=DEFAULT_WINDOW))
    try:
        assert await page.refresh()
        page.draft.value = page.draft.value_input = "rules: [unclosed"
        await page._simulate()
        said = page.message.text
        assert page.message.kind == "error" and said.startswith("the draft is not valid YAML at line 1")
        assert await page.refresh()  # the next tick
        assert (page.message.kind, page.message.text) == ("error", said)

        # an API that went away is a refresh's error, which the next good refresh clears
        page.client = ApiClient(f"http://127.0.0.1:{unused_tcp_port}")
        try:
            assert not await page.refresh()
            assert page.message.kind == "error" and page.message.text != said
        finally:
            await page.client.close()
        page.client = client
        assert await page.refresh()
        assert page.message.kind == "" and not page.message.pane.visible
    finally:
        await client.close()
